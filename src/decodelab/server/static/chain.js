// decodelab web explorer: the sampler stages the page re-runs itself, so the bars follow the sliders
// without a round trip.
//
// Which stages run, in which order and with which settings comes from the server (/api/info's `stages` and
// `default_order`, see app.js `chainPlan`); this file only knows how to run some of them, over the raw logits
// the server sends, exactly as the stage modules in decodelab/samplers/stages do. A plan holding any other
// stage (penalties, typical_p, DRY, ...) is computed by the server instead. tests/test_web.py checks the
// result against the server's own chain (to 1e-4) and on hand-computed 4-token distributions.
//
// A remote model's server told only its top tokens (`next.reported_ids`); the rest of the mass is spread
// evenly over the other tokens, which are not real candidates. Those reported come first in `order`, and the
// chain's first stage keeps them only, as the server's own `reported` stage does (tests/test_web_remote.py).
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

// Decode once per state: logits, token ids sorted by logit (descending; a remote model's reported tokens
// first), and the raw softmax. `partial` is null for a model run on the server itself.
function prepareDistribution(next) {
  const logits = decodeLogits(next.logits);
  const reported = new Uint8Array(logits.length); // 1: the remote server told this token's probability
  for (const id of next.reported_ids || []) reported[id] = 1;
  const partial = next.reported_ids
    ? { reported: next.reported, knownMass: next.known_mass, entropyBounds: next.entropy_bounds }
    : null;
  const order = new Uint32Array(logits.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  order.sort((a, b) => reported[b] - reported[a] || logits[b] - logits[a] || a - b);
  const position = new Uint32Array(logits.length); // id -> place in `order`
  for (let j = 0; j < order.length; j++) position[order[j]] = j;
  const pieces = new Map(next.top.map((c) => [c.id, c.piece]));
  const bytes = new Map(next.top.map((c) => [c.id, c.bytes ? Uint8Array.from(c.bytes) : pieceBytes(c.piece)]));
  const raw = runChain({ logits, order, position }, { greedy: false, stages: [] });
  return { logits, order, position, pieces, bytes, raw, partial, entropy: next.entropy, top: next.top };
}

// The working state of one chain run. Every local stage only removes tokens from the low end of the ranking
// (temperature > 0 keeps the order), so what survives is always a prefix of `order`: `kept` tokens, whose
// current logits are `at(0) >= at(1) >= ... >= at(kept - 1)`.
class Chain {
  constructor(dist) {
    const { logits, order } = dist;
    this.current = new Float64Array(logits.length); // the current logit of order[j], as float32 values
    for (let j = 0; j < order.length; j++) this.current[j] = logits[order[j]];
    this.kept = logits.length;
  }

  at(j) {
    return this.current[j];
  }

  // The softmax of the kept tokens, in doubles: j -> probability of order[j].
  softmax() {
    const top = this.at(0);
    let total = 0;
    for (let j = 0; j < this.kept; j++) total += Math.exp(this.at(j) - top);
    return (j) => Math.exp(this.at(j) - top) / total;
  }

  // Keep the first n tokens, at least the top one (every cut here always keeps the most likely token).
  keep(n) {
    this.kept = Math.max(1, Math.min(n, this.kept));
  }

  // The longest prefix whose tokens pass `test(j)` (the tokens are in descending order, so it is a prefix).
  keepWhile(test) {
    let n = 1;
    while (n < this.kept && test(n)) n++;
    this.keep(n);
  }
}

const MARKED = 64; // top-p reports the cumulative mass of this many tokens, the most the bars show

// The stages this page runs itself, by stage name: the settings each reads, and how it narrows the chain.
// A stage declaring settings beyond these is left to the server (the page would not know what they mean).
const LOCAL_STAGES = {
  // Temperature: logits / T with T rounded to float32, as torch divides a float32 tensor by a Python float
  // (dividing two float32 values in doubles and rounding once is exact).
  temperature: {
    settings: ["temperature"],
    run(chain, { temperature }) {
      const t32 = Math.fround(temperature);
      for (let j = 0; j < chain.kept; j++) chain.current[j] = Math.fround(chain.current[j] / t32);
    },
  },
  // Top-nσ: keep logits >= max - n * std, the population std of the finite (kept) logits, in doubles.
  top_n_sigma: {
    settings: ["top_n_sigma"],
    run(chain, { top_n_sigma: n }) {
      if (!(n > 0)) return; // n <= 0 turns it off, as in llama.cpp
      let sum = 0;
      for (let j = 0; j < chain.kept; j++) sum += chain.at(j);
      const mean = sum / chain.kept;
      let squares = 0;
      for (let j = 0; j < chain.kept; j++) squares += (chain.at(j) - mean) ** 2;
      const threshold = chain.at(0) - n * Math.sqrt(squares / chain.kept);
      chain.keepWhile((j) => chain.at(j) >= threshold);
    },
  },
  // Top-k: keep logits >= the k-th largest (ties with it stay, as in transformers).
  top_k: {
    settings: ["top_k"],
    run(chain, { top_k: k }) {
      if (k >= chain.kept) return;
      const kth = chain.at(k - 1);
      let kept = k;
      while (kept < chain.kept && chain.at(kept) >= kth) kept++;
      chain.keep(kept);
    },
  },
  // Top-p: from the least likely up, drop tokens while the tail's mass stays <= 1 - p; the top token stays.
  top_p: {
    settings: ["top_p"],
    run(chain, { top_p }) {
      const p = chain.softmax();
      const limit = Math.fround(1 - top_p);
      let kept = chain.kept;
      let tail = 0;
      for (let j = chain.kept - 1; j >= 1; j--) {
        tail += p(j);
        if (tail > limit) break;
        kept = j;
      }
      // The cumulative mass of the first MARKED tokens, as this stage saw it: the bars draw it as a line.
      const cumulative = new Float64Array(Math.min(MARKED, chain.kept));
      for (let j = 0, sum = 0; j < cumulative.length; j++) cumulative[j] = sum += p(j);
      chain.keep(kept);
      return { threshold: top_p, cumulative };
    },
  },
  // Min-p: drop tokens whose probability is below min_p times the top token's; the top token stays.
  min_p: {
    settings: ["min_p"],
    run(chain, { min_p }) {
      const p = chain.softmax();
      const threshold = min_p * p(0);
      chain.keepWhile((j) => p(j) >= threshold);
      return { threshold }; // a probability, in the distribution this stage saw
    },
  },
  // Epsilon cutoff: keep tokens with p >= epsilon; the top token stays.
  epsilon_cutoff: {
    settings: ["epsilon_cutoff"],
    run(chain, { epsilon_cutoff: epsilon }) {
      const p = chain.softmax();
      chain.keepWhile((j) => p(j) >= epsilon);
    },
  },
  // Eta cutoff: keep tokens with p >= min(epsilon, sqrt(epsilon) * exp(-H)), H the entropy (nats) of the
  // current distribution; the top token stays.
  eta_cutoff: {
    settings: ["eta_cutoff"],
    run(chain, { eta_cutoff: epsilon }) {
      const p = chain.softmax();
      let entropy = 0;
      for (let j = 0; j < chain.kept; j++) {
        const pj = p(j);
        if (pj > 0) entropy -= pj * Math.log(pj);
      }
      const eta = Math.min(epsilon, Math.sqrt(epsilon) * Math.exp(-entropy));
      chain.keepWhile((j) => p(j) >= eta);
    },
  },
};

// Whether the page can run a stage as /api/info describes it: it knows the stage and every one of its settings.
function runsLocally(stage) {
  const local = LOCAL_STAGES[stage.name];
  return Boolean(local) && stage.settings.every((setting) => local.settings.includes(setting.name));
}

// The chain over one distribution. `plan` = {greedy, stages: [{name, values: {setting: value}}]}: the stages
// that are on, in order (app.js `chainPlan`; greedy leaves out the warpers). Every stage must run locally.
// On a remote model (`dist.partial`) the `reported` stage runs first. Returns {kept, greedy, stages: [{name,
// kept, threshold?, cumulative?}], prob(id), entropy} — prob is the softmax of the final logits, entropy its
// entropy in nats (0 for greedy).
function runChain(dist, plan) {
  const { order, position } = dist;
  const chain = new Chain(dist);
  const stages = [];
  if (dist.partial) {
    // A remote model: only the reported tokens (the first of `order`) may be drawn; the rest is not known.
    chain.keep(dist.partial.reported);
    stages.push({ name: "reported", kept: chain.kept });
  }
  for (const stage of plan.stages) {
    const local = LOCAL_STAGES[stage.name];
    if (!local) throw new Error(`the page does not run the ${stage.name} stage: ask the server`);
    const marks = local.run(chain, stage.values); // top-p and min-p say where they cut (for the bars)
    stages.push({ name: stage.name, kept: chain.kept, ...marks });
  }
  if (plan.greedy) {
    // Greedy takes the argmax of what is left: every local stage keeps the top token, so order[0].
    return { kept: 1, greedy: true, stages: [...stages, { name: "greedy", kept: 1 }], entropy: 0,
      prob: (id) => (id === order[0] ? 1 : 0) };
  }
  const p = chain.softmax();
  const kept = chain.kept;
  let entropy = 0;
  for (let j = 0; j < kept; j++) {
    const pj = p(j);
    if (pj > 0) entropy -= pj * Math.log(pj);
  }
  return { kept, greedy: false, stages, entropy, prob: (id) => (position[id] < kept ? p(position[id]) : 0) };
}
