// decodelab web explorer: the Text and Tokens panels.
//
// The text is written from the steps' bytes, so a character split across byte tokens (Korean, in byte-level
// BPE) reads as the character once whole, and an unfinished one at the end shows as a placeholder, not as
// <0xEC><0xA7>. A special token (<|im_end|>) is a marker, not text. In the Tokens panel the byte tokens of
// one character sit in a box labelled with it. Both panels follow the end as tokens arrive.
"use strict";

function tokenBytes(token) {
  if (Array.isArray(token.bytes)) return Uint8Array.from(token.bytes);
  if (typeof token.bytes === "string") return hexBytes(token.bytes); // the prompt's rows: hex
  return pieceBytes(token.piece);
}

// Every token of the session, prompt first, each with its bytes.
function sessionTokens(state) {
  return [
    ...state.prompt.tokens.map((token) => ({ ...token, bytes: tokenBytes(token) })),
    ...state.steps.map((step) => ({ ...step, bytes: tokenBytes(step), generated: true })),
  ];
}

function renderText(state, tokens) {
  writeTokens($("prompt-text"), tokens.filter((token) => !token.generated));
  writeTokens($("generated-text"), tokens.filter((token) => token.generated));
  const box = $("text");
  box.scrollTop = box.scrollHeight;
}

// Tokens as text: their bytes decoded, a special token as a marker (a stop token: "⏹ stop"), and an unfinished
// character at the end as a placeholder.
function writeTokens(out, tokens) {
  out.replaceChildren();
  let run = [];
  const flush = (last) => {
    const stream = joinBytes(run);
    const whole = last ? wholeLength(stream) : stream.length;
    if (whole) out.append(new TextDecoder().decode(stream.subarray(0, whole)));
    if (whole < stream.length) {
      const hex = Array.from(stream.subarray(whole), (b) => b.toString(16).toUpperCase().padStart(2, "0"));
      const mark = element("span", "partial-char", "▯…");
      mark.title = `an unfinished character: bytes ${hex.join(" ")} so far, the next token may complete it`;
      out.append(mark);
    }
    run = [];
  };
  for (const token of tokens) {
    if (token.special) {
      flush(false);
      const stop = token.generated && token.is_stop;
      const name = String(token.piece).replace(/^<\|?/, "").replace(/\|?>$/, "");
      const marker = element("span", stop ? "stop-marker" : "special-marker", stop ? "⏹ stop" : name);
      marker.title = `${token.piece}: special token ${token.id}` + (stop ? ", a stop token (not text)" : " (not text)");
      out.append(marker);
    } else run.push(token.bytes);
  }
  flush(true);
}

function renderTokens(state, tokens) {
  const box = $("tokens");
  box.replaceChildren();
  const byteLists = tokens.map((token) => token.bytes);
  const hints = characterHints(byteLists);
  const groups = new Map(characterGroups(byteLists).map((group) => [group.first, group]));
  let target = box;
  let groupEnd = -1;
  tokens.forEach((token, index) => {
    const group = groups.get(index);
    if (group) {
      const label = group.text.trim() || group.text;
      const wrap = element("span", `char-group${group.complete ? "" : " unfinished"}`);
      wrap.dataset.text = label;
      wrap.title = group.complete ? `these byte tokens spell “${label}”` : "an unfinished character: waiting for its last bytes";
      wrap.append(element("span", "group-label", group.complete ? label : `${label}▯…`));
      const chips = element("span", "group-chips");
      wrap.append(chips);
      box.append(wrap);
      target = chips;
      groupEnd = group.last;
    }
    target.append(tokenChip(token, hints[index]));
    if (index === groupEnd) target = box;
  });
  box.scrollTop = box.scrollHeight;
}

function tokenChip(token, hint) {
  let title;
  let classes;
  if (token.generated) {
    classes = `generated${token.forced ? " forced" : ""}${token.overruled_by ? " overruled" : ""}`;
    title = `step ${token.step + 1}: ${percent(token.prob)} after the chain, ${percent(token.raw_prob)} raw, ` +
      `rank ${token.rank}${token.forced ? " (appended by hand)" : ""}`;
    if (token.overruled_by) title += ` · ${overruledText(token)}`;
    title += " · click to go back to here (the later tokens can be redone)";
  } else {
    classes = `prompt${token.special ? " special" : ""}`;
    title = `${token.special ? "special" : "prompt"} token ${token.id}`;
  }
  title += ` · bytes ${Array.from(token.bytes, (b) => b.toString(16).padStart(2, "0")).join(" ")}`;
  if (hint) title += ` · part of “${hint}”`;
  const node = chip(token.piece, token.id, classes, title);
  if (token.generated) {
    node.style.setProperty("--p", token.raw_prob.toFixed(3));
    node.dataset.step = token.step;
    node.tabIndex = 0;
    node.setAttribute("role", "button");
    const go = () => action(() => backTo(token.step + 1));
    node.addEventListener("click", go);
    node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        go();
      }
    });
  }
  return node;
}

// Why a step is marked: the stage that removed the model's own top choice (a grammar forbidding it, ...).
function overruledText(step) {
  const top = step.raw_top && step.raw_top[0];
  const what = top ? `the model's own top choice “${top.piece}” (${percent(top.prob)})` : "the model's own top choice";
  return `${what} was removed by the ${stageName(step.overruled_by)} stage`;
}
