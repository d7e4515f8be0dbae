// decodelab web explorer: numbers and token pieces as the page shows them.
"use strict";

// A probability in at most six characters, so a column never spills: "12.3%", "1.23%", "0.012%", "<0.01%".
// The exact value goes in a title (exactPercent).
function percent(p) {
  if (p === 0) return "0%";
  const value = 100 * p;
  if (value >= 10) return `${value.toFixed(1)}%`;
  if (value >= 0.1) return `${value.toFixed(2)}%`;
  if (value >= 0.01) return `${value.toPrecision(2)}%`;
  return "<0.01%";
}

function exactPercent(p) {
  return p === 0 ? "0%" : `${(100 * p).toPrecision(3)}%`;
}

function count(n) {
  return n.toLocaleString("en");
}

function stageName(name) {
  return name.replaceAll("_", "-");
}

// A share of the mass a stage removed: a grammar often removes nearly all of it, which "100.0%" would hide.
function removedShare(p) {
  return p > 0.999 ? `all but ${percent(Math.max(0, 1 - p))}` : percent(p);
}

const WHITESPACE = { " ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍" };

// A piece with its spaces, newlines and partial-character bytes made visible.
function pieceNode(piece) {
  const node = document.createElement("span");
  node.className = "piece";
  for (const part of String(piece).split(/(<0x[0-9A-Fa-f]{2}>|[ \n\t\r])/)) {
    if (!part) continue;
    if (WHITESPACE[part]) {
      node.append(element("span", "ws", WHITESPACE[part]));
    } else if (/^<0x[0-9A-Fa-f]{2}>$/.test(part)) {
      node.append(element("span", "byte", part));
    } else {
      node.append(part);
    }
  }
  return node;
}

function chip(piece, id, classes, title) {
  const node = element("span", `chip ${classes || ""}`.trim());
  node.append(pieceNode(piece), element("span", "id", String(id)));
  node.dataset.id = id;
  if (title) node.title = title;
  return node;
}

// A small ⓘ button and the plain-language text it shows and hides: works by tap, not by hover.
function explainer(text) {
  const note = element("p", "explain", text);
  note.hidden = true;
  const button = element("button", "info", "ⓘ");
  button.type = "button";
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-label", "what is this?");
  button.addEventListener("click", (event) => {
    event.preventDefault();
    note.hidden = !note.hidden;
    button.setAttribute("aria-expanded", String(!note.hidden));
  });
  return { button, note };
}
