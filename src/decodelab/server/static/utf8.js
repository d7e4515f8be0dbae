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
