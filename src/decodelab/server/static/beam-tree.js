// decodelab web explorer: the beam tree of POST /api/beam drawn as SVG, for views.js ("Beam tree from here").
//
// One column per step, the root (the current position) first; in each column the candidates that step ranked,
// best first, as the BeamTree lists them. A node shows its token and the log-probability it added; kept beams
// are outlined, finished hypotheses green, pruned candidates faded, and the returned best beam, root to leaf,
// drawn in orange. A token that finishes a character begun by earlier bytes (byte-level BPE splits a Korean
// syllable over two or three tokens) shows that character ("→지"); the node's title says the rest.
(() => {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const LAYOUT = { column: 118, row: 26, nodeWidth: 106, nodeHeight: 20, pad: 8, label: 8 };
  const WHITESPACE = { " ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍" };
  const CONTEXT_BYTES = 12; // bytes of a node's path kept to read the character it may finish

  function svg(tag, attributes, text) {
    const made = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) made.setAttribute(name, value);
    if (text !== undefined) made.textContent = text;
    return made;
  }

  const visible = (text) => String(text).replace(/[ \n\t\r]/g, (c) => WHITESPACE[c]);

  // The text `bytes` finish after `before`: the character(s) from the start of the one its first byte belongs
  // to, when its last byte ends a character; null when it stops partway through one.
  function finishes(before, bytes) {
    const stream = new Uint8Array(before.length + bytes.length);
    stream.set(before);
    stream.set(bytes, before.length);
    let begin = before.length;
    while (begin > 0 && (stream[begin] & 0xc0) === 0x80) begin--;
    const text = new TextDecoder().decode(stream.subarray(begin));
    return text.includes("\ufffd") ? null : text;
  }

  function nodeText(item, finished, onBest) {
    if (item.parent_id === null) return "the current position: every beam starts here";
    return `step ${item.step + 1}, rank ${item.rank + 1}: “${visible(item.piece)}”` +
      (finished ? ` (completes “${visible(finished)}”)` : "") +
      ` · log-prob ${item.logprob.toFixed(3)} · beam total ${item.cum_logprob.toFixed(3)} · ${item.status}` +
      (item.note ? ` (${item.note})` : "") + (item.score !== null ? ` · score ${item.score.toFixed(3)}` : "") +
      (onBest ? " · on the best beam ★" : "");
  }

  // tree: /api/beam's `tree`; tail: the position's last bytes (a character may span the boundary);
  // pick(text): called with a node's description when it is tapped. Returns the <svg>.
  function draw(tree, tail, pick) {
    const nodes = tree.nodes;
    const best = new Set();
    for (let at = tree.returned.length ? tree.returned[0] : null; at !== null; at = nodes[at].parent_id) best.add(at);
    const rowOf = new Map([[0, 0]]);
    const counts = [];
    for (const item of nodes.slice(1)) { // step by step, best first within a step
      counts[item.step] = (counts[item.step] || 0) + 1;
      rowOf.set(item.id, counts[item.step] - 1);
    }
    const { column, row, nodeWidth, nodeHeight, pad } = LAYOUT;
    const at = (item) => ({ x: pad + (item.step + 1) * column, y: pad + rowOf.get(item.id) * row });
    const drawing = svg("svg", { width: pad * 2 + (counts.length + 1) * column,
      height: pad * 2 + Math.max(1, ...counts) * row, class: "lv-tree-svg" });
    const edges = svg("g", { class: "lv-edges" });
    drawing.append(edges);
    const pathBytes = new Map(); // node id -> the last bytes of the text up to it
    for (const item of nodes) {
      const root = item.parent_id === null;
      const bytes = root ? new Uint8Array() : pieceBytes(item.piece);
      const before = root ? tail : pathBytes.get(item.parent_id);
      pathBytes.set(item.id, Uint8Array.from([...before, ...bytes].slice(-CONTEXT_BYTES)));
      const spelled = root ? null : finishes(before, bytes);
      const finished = spelled !== null && spelled !== new TextDecoder().decode(bytes) ? spelled : null;
      const label = root ? "here" : finished ? `→${visible(finished)}` : visible(item.piece);
      const fate = `lv-${item.status}${best.has(item.id) ? " lv-best" : ""}`;
      const where = at(item);
      const group = svg("g", { class: `lv-node ${fate}`, transform: `translate(${where.x},${where.y})`,
        "data-node": item.id, "data-token": item.token_id ?? "", "data-step": item.step, "data-status": item.status });
      const short = label.length > LAYOUT.label ? `${label.slice(0, LAYOUT.label - 1)}…` : label;
      group.append(svg("rect", { width: nodeWidth, height: nodeHeight, rx: 4 }),
        svg("text", { x: 5, y: 14, class: "lv-node-piece" }, short));
      if (!root) {
        group.append(svg("text", { x: nodeWidth - 4, y: 14, class: "lv-node-logprob", "text-anchor": "end" },
          item.logprob.toFixed(2)));
        const from = at(nodes[item.parent_id]);
        const [x1, y1, y2] = [from.x + nodeWidth, from.y + nodeHeight / 2, where.y + nodeHeight / 2];
        const mid = (x1 + where.x) / 2;
        const curve = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${where.x},${y2}`;
        edges.append(svg("path", { class: `lv-edge ${fate}`, d: curve }));
      }
      const text = nodeText(item, finished, best.has(item.id));
      group.append(svg("title", {}, text));
      group.addEventListener("click", () => pick(text));
      drawing.append(group);
    }
    return drawing;
  }

  window.decodelabBeamTree = { draw };
})();
