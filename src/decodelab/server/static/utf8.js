// decodelab web explorer: the bytes behind token pieces. Byte-level BPE (SmolLM2, GPT-2) often splits a
// Korean syllable (three UTF-8 bytes) across tokens; a piece shows such bytes as <0xNN>.
"use strict";

function hexBytes(hex) {
  return Uint8Array.from(hex.match(/../g) || [], (pair) => parseInt(pair, 16));
}

// The bytes behind a readable piece: text as UTF-8, each <0xNN> as one byte.
function pieceBytes(piece) {
  const out = [];
  const encoder = new TextEncoder();
  for (const part of String(piece).split(/(<0x[0-9A-Fa-f]{2}>)/)) {
    if (/^<0x[0-9A-Fa-f]{2}>$/.test(part)) out.push(parseInt(part.slice(3, 5), 16));
    else out.push(...encoder.encode(part));
  }
  return Uint8Array.from(out);
}

// For each token holding part of a character (byte-level BPE splits Korean syllables), the whole
// character(s) it helps to spell, found by widening its bytes to UTF-8 boundaries; "" for the others.
function characterHints(byteLists) {
  const stream = new Uint8Array(byteLists.reduce((n, bytes) => n + bytes.length, 0));
  const starts = [];
  let offset = 0;
  for (const bytes of byteLists) {
    starts.push(offset);
    stream.set(bytes, offset);
    offset += bytes.length;
  }
  const continuation = (i) => i < stream.length && (stream[i] & 0xc0) === 0x80;
  const decoder = new TextDecoder("utf-8", { fatal: false });
  return byteLists.map((bytes, index) => {
    let begin = starts[index];
    let end = begin + bytes.length;
    const partial = continuation(begin) || continuation(end) ||
      decoder.decode(bytes).includes("\ufffd");
    if (!partial || bytes.length === 0) return "";
    while (begin > 0 && continuation(begin)) begin--;
    while (continuation(end)) end++;
    return decoder.decode(stream.subarray(begin, end)).trim();
  });
}

function isContinuation(byte) {
  return (byte & 0xc0) === 0x80;
}

// How many bytes a character starting with `lead` takes (1 for ASCII and for a stray byte).
function characterLength(lead) {
  if (lead >= 0xf0 && lead < 0xf8) return 4;
  if (lead >= 0xe0) return 3;
  if (lead >= 0xc0) return 2;
  return 1;
}

// Where the last whole character of `bytes` ends: the bytes after it are an unfinished character.
function wholeLength(bytes) {
  for (let i = bytes.length - 1; i >= Math.max(0, bytes.length - 4); i--) {
    if (isContinuation(bytes[i])) continue;
    return i + characterLength(bytes[i]) > bytes.length ? i : bytes.length;
  }
  return bytes.length;
}

function joinBytes(byteLists) {
  const stream = new Uint8Array(byteLists.reduce((n, bytes) => n + bytes.length, 0));
  let offset = 0;
  for (const bytes of byteLists) {
    stream.set(bytes, offset);
    offset += bytes.length;
  }
  return stream;
}

// The bytes of an unfinished character at the end of a text's bytes (empty when the text ends whole).
function pendingBytes(stream) {
  return stream.slice(wholeLength(stream));
}

// What appending `bytes` after `pending` (an unfinished character) spells: {text} the whole characters
// written, {pending} the bytes still waiting for the rest of a character.
function spelled(pending, bytes) {
  const all = joinBytes([pending, bytes]);
  const cut = wholeLength(all);
  return { text: new TextDecoder().decode(all.subarray(0, cut)), pending: all.length - cut };
}

// The tokens that share a character, as groups: {first, last} token indices, the characters they spell
// together (`text`) and whether the last one is finished (`complete`). Only runs of two or more tokens, or a
// last token ending mid-character, form a group: each byte token of a syllable sits under that syllable.
function characterGroups(byteLists) {
  const stream = joinBytes(byteLists);
  const groups = [];
  let offset = 0;
  let group = null;
  byteLists.forEach((bytes, index) => {
    const start = offset;
    offset += bytes.length;
    const joined = group && bytes.length > 0 && start < stream.length && isContinuation(stream[start]);
    if (joined) group.last = index;
    else {
      if (group) groups.push(group);
      group = { first: index, last: index, start };
    }
    group.end = offset;
  });
  if (group) groups.push(group);
  const whole = wholeLength(stream);
  return groups.filter((g) => g.last > g.first || g.end > whole).map((g) => ({
    first: g.first,
    last: g.last,
    text: new TextDecoder().decode(stream.subarray(g.start, Math.min(g.end, whole))),
    complete: g.end <= whole,
  }));
}
