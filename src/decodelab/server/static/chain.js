// decodelab web explorer: the sampler chain of decodelab/samplers.py, re-run in the page.
//
// temperature -> top_k -> top_p -> min_p (samplers.DEFAULT_ORDER) over the raw logits the server sends, so
// the bars follow the sliders without a round trip. tests/test_web.py checks the result against the
// server's own chain (to 1e-4) and on hand-computed 4-token distributions.
"use strict";

function decodeLogits(base64) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const view = new DataView(bytes.buffer);
  const logits = new Float32Array(bytes.length / 4);
  for (let i = 0; i < logits.length; i++) logits[i] = view.getFloat32(4 * i, true); // little-endian
  return logits;
}

// Decode once per state: logits, token ids sorted by logit (descending), and the raw softmax.
function prepareDistribution(next) {
  const logits = decodeLogits(next.logits);
  const order = new Uint32Array(logits.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  order.sort((a, b) => logits[b] - logits[a] || a - b);
  const position = new Uint32Array(logits.length); // id -> place in `order`
  for (let j = 0; j < order.length; j++) position[order[j]] = j;
  const pieces = new Map(next.top.map((c) => [c.id, c.piece]));
  const raw = runChain({ logits, order, position }, { temperature: 1, topK: 0, topP: 1, minP: 0, greedy: false });
  return { logits, order, position, pieces, raw, entropy: next.entropy, top: next.top };
}

// The chain over one distribution. Every stage only removes tokens from the low end of the ranking
// (temperature > 0 keeps the order), so what survives is always a prefix of `order`: `kept` tokens.
// Returns {kept, stages: [{name, kept}], prob(id)} — prob is the softmax of the final logits, in doubles.
function runChain(dist, settings) {
  const { logits, order, position } = dist;
  const size = logits.length;
  if (settings.greedy || settings.temperature === 0) {
    // Greedy leaves out the reshaping stages and takes the argmax.
    return { kept: 1, greedy: true, stages: [{ name: "greedy", kept: 1 }], prob: (id) => (id === order[0] ? 1 : 0) };
  }
  // Temperature: logits / T with T rounded to float32, as torch divides a float32 tensor by a Python float
  // (dividing two float32 values in doubles and rounding once is exact). T = 1 is no stage at all.
  const t = settings.temperature;
  const t32 = Math.fround(t);
  const scaled = new Float64Array(size);
  for (let i = 0; i < size; i++) scaled[i] = t === 1 ? logits[i] : Math.fround(logits[i] / t32);
  const at = (j) => scaled[order[j]];
  const stages = [];
  if (t !== 1) stages.push({ name: "temperature", kept: size });
  let kept = size;

  // Top-k: keep logits >= the k-th largest (ties with it stay, as in transformers).
  if (settings.topK > 0) {
    const kth = at(Math.min(settings.topK, size) - 1);
    kept = Math.min(settings.topK, size);
    while (kept < size && at(kept) >= kth) kept++;
    stages.push({ name: "top_k", kept });
  }
  const softmaxOfPrefix = (n) => {
    const top = at(0);
    let total = 0;
    for (let j = 0; j < n; j++) total += Math.exp(at(j) - top);
    return (j) => Math.exp(at(j) - top) / total;
  };
  // Top-p: from the least likely up, drop tokens while the tail's mass stays <= 1 - p; the top token stays.
  if (settings.topP < 1) {
    const p = softmaxOfPrefix(kept);
    const limit = Math.fround(1 - settings.topP);
    let tail = 0;
    for (let j = kept - 1; j >= 1; j--) {
      tail += p(j);
      if (tail > limit) break;
      kept = j;
    }
    stages.push({ name: "top_p", kept });
  }
  // Min-p: drop tokens whose probability is below min_p times the top token's; the top token stays.
  if (settings.minP > 0) {
    const p = softmaxOfPrefix(kept);
    const threshold = settings.minP * p(0);
    let n = 1;
    while (n < kept && p(n) >= threshold) n++;
    kept = n;
    stages.push({ name: "min_p", kept });
  }
  const p = softmaxOfPrefix(kept);
  return { kept, greedy: false, stages, prob: (id) => (position[id] < kept ? p(position[id]) : 0) };
}
