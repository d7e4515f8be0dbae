"""Beam search over one prompt as a plain per-step loop, and the tree of every expansion it weighed.

    prefill(prompt) -> each step: log_softmax -> processors -> + beam scores -> top K expansions
                    -> finished hypotheses / next live beams -> stop? -> reorder the cache, feed the new tokens

It mirrors transformers' `_beam_search` (generation/utils.py, v5) decision for decision, so its sequences and
scores equal `generate(num_beams=..., do_sample=False)` and its `sequences_scores` (tests/test_beam.py):

- K = max(2, 1 + number of stop ids) * num_beams expansions are ranked per step, so that even when the best
  continuations of every beam are stop tokens, num_beams candidates remain to carry the search on.
- Only stop candidates ranked within the top num_beams of the K finish a hypothesis; a stop token ranked
  lower is discarded (the extra candidates exist only to keep num_beams beams alive).
- At the last allowed step (max_new_tokens), each of the top num_beams candidates finishes.
- A finished hypothesis scores sum_logprob / generated ** length_penalty, `generated` counting every new token,
  the stop token included. The num_beams best are kept; the best num_return_sequences are returned.
- The search ends once num_beams hypotheses are finished and: early_stopping=True: at once; False: the best
  live beam, scored at its current length, cannot beat the worst kept hypothesis; "never": the same, but
  scored at max_new_tokens when length_penalty > 0 (the most optimistic length it could reach).
- Scores add log-probabilities *after* the processors (the stages greedy decoding keeps: repetition penalty,
  no-repeat n-gram, DRY, biases), which act on log-softmaxed scores, as transformers' beam search applies them.

One simplification: transformers starts from num_beams copies of the prompt and scores all but the first at
-1e9 so that step 0 expands one; here step 0 simply has one live beam, the prompt, prefilled once by a
`DecodeState` (as every decode starts). Its cache row is duplicated into num_beams rows when the first beams
are chosen (the same `DecodeState.reorder` call as later).

Under a constraint (`constraint=`, or `json_schema=`, `regex=`, `choice=`, ... as for `generate`), the
constraint is the first processor, built with the decoder (its tokenizer and stop ids make the mask):

- A forbidden expansion scores -inf and is never ranked, so a step may rank fewer than K candidates, and a
  beam never holds a forbidden token. Allowed tokens keep the model's own log-probability (the mask removes,
  it does not renormalise), so a hypothesis' sum_logprob is log P(output | prompt) under the model.
- A candidate after which the grammar allows nothing but the end finishes a hypothesis as a stop token does
  (when it ranks in the top num_beams), with the stop reason `constraint_complete` and no stop token after it:
  as `generate` stops, so (without penalties) the same output has the sum_logprob of a generation's
  `Result.logprob`.
- Each `BeamStep` keeps, per live beam, what each processor did (`StageReport`: tokens kept, probability
  removed, whether it removed the model's top choice) and the model's own top choice (`model_top`), so the
  tree says where the grammar overruled the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from decodelab.beam_records import BeamHypothesis, BeamNode, BeamResult, BeamStep, BeamTree, LiveBeam
from decodelab.constraints import Constraint, constraint_from_keywords
from decodelab.decoder import Decoder, HasDecoder, as_decoder
from decodelab.decoding import DecodeState, top_alternatives
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.records import StopReason
from decodelab.samplers import STAGES, SamplerChain
from decodelab.tokens import token_piece

if TYPE_CHECKING:
    pass

# Settings beam search takes: those of the stages greedy decoding keeps (penalties and biases, not warpers).
PENALTIES = tuple(setting.name for stage in STAGES.values() if not stage.warper for setting in stage.settings)


@dataclass(frozen=True)
class BeamConfig:
    num_beams: int  # live beams per step, >= 2 (one beam is greedy decoding: use generate(greedy=True))
    max_new_tokens: int = 64  # longest hypothesis; every top-num_beams candidate of that step finishes
    length_penalty: float = 1.0  # score = sum_logprob / generated ** length_penalty; > 0 favours longer ones
    early_stopping: bool | str = False  # True | False | "never": when the search may end (module docstring)
    num_return_sequences: int = 1  # best finished hypotheses returned, <= num_beams
    # settings of the sampler stages greedy decoding keeps (repetition_penalty, no_repeat_ngram_size, dry_*,
    # logit_bias, ...): applied to the log-probabilities, in the default order, as transformers' beam search does
    penalties: dict[str, Any] = field(default_factory=dict)
    stop_token_ids: tuple[int, ...] | None = None  # None = the model's stop ids, Decoder.stop_ids()
    # a grammar every hypothesis must match (decodelab.constraints), the first processor: forbidden expansions are
    # never ranked, and one that completes the output finishes with "constraint_complete" (module docstring)
    constraint: Constraint | None = None

    def __post_init__(self):
        _check_int("num_beams", self.num_beams, 2, " (1 beam is greedy decoding: use generate(greedy=True))")
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_int("num_return_sequences", self.num_return_sequences, 1)
        if self.num_return_sequences > self.num_beams:
            raise BadInput(
                f"num_return_sequences must be <= num_beams ({self.num_beams}), got {self.num_return_sequences!r}"
            )
        if not (
            isinstance(self.length_penalty, (int, float))
            and not isinstance(self.length_penalty, bool)
            and math.isfinite(self.length_penalty)
        ):
            raise BadInput(f"length_penalty must be a finite number, got {self.length_penalty!r}")
        if not (self.early_stopping is True or self.early_stopping is False or self.early_stopping == "never"):
            raise BadInput(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if self.stop_token_ids is not None and any(
            not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in self.stop_token_ids
        ):
            raise BadInput(f"stop_token_ids must be token ids >= 0, got {list(self.stop_token_ids)!r}")
        if not isinstance(self.penalties, dict) or (reshaping := sorted(set(self.penalties) - set(PENALTIES))):
            wrong = reshaping[0] if isinstance(self.penalties, dict) else repr(self.penalties)
            raise BadInput(
                f"beam search takes the settings of stages greedy decoding keeps ({', '.join(PENALTIES)}), "
                f"not {wrong}: it scores every continuation, so there is no draw to reshape"
            )
        self.generation_config()  # validates the penalties and the constraint, with the same messages as everywhere

    def generation_config(self) -> GenerationConfig:
        """The greedy config whose chain is beam search's processors (its stop ids make a constraint's mask)."""
        return GenerationConfig(
            greedy=True, stop_token_ids=self.stop_token_ids, constraint=self.constraint, **self.penalties
        )

    def processors(self, decoder: Decoder | None = None) -> SamplerChain:
        """The stages beam search applies to log-probabilities: the constraint first (it needs the `decoder`),
        then those greedy decoding keeps, in default order."""
        return self.generation_config().chain(decoder)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["stop_token_ids"] = None if self.stop_token_ids is None else list(self.stop_token_ids)
        values["constraint"] = None if self.constraint is None else self.constraint.to_dict()
        return values


def _check_int(name: str, value: object, minimum: int, hint: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadInput(f"{name} must be a whole number >= {minimum}{hint}, got {value!r}")


def beam_search(
    model: Decoder | HasDecoder,
    prompt_ids: list[int],
    num_beams: int,
    max_new_tokens: int = 64,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int = 1,
    stop_token_ids: Iterable[int] | None = None,
    constraint: Constraint | None = None,
    **penalties: Any,
) -> BeamResult:
    """Beam search from `prompt_ids` with an `LM` or its `Decoder`; equal to transformers'
    `generate(num_beams=..., do_sample=False)`. `penalties` are settings of the stages greedy decoding keeps
    (`repetition_penalty=1.2`, `no_repeat_ngram_size=3`, `dry_multiplier=0.8`, `ban=(13,)`, ...). A constraint is
    a `Constraint` or named by its kind, as for `generate` (`json_schema=...`, `regex=...`, `choice=[...]`)."""
    penalties = dict(penalties)
    named = constraint_from_keywords(penalties)  # removes json_schema=, regex=, choice=, ... from penalties
    if named is not None and constraint is not None:
        raise BadInput(f"give one constraint at a time, got constraint= and {named.kind}=")
    stops = None if stop_token_ids is None else tuple(stop_token_ids)
    config = BeamConfig(
        num_beams,
        max_new_tokens,
        length_penalty,
        early_stopping,
        num_return_sequences,
        penalties,
        stops,
        constraint or named,
    )
    return run_beam_search(as_decoder(model), prompt_ids, config)


ENDING_NOTES = {  # a candidate that would end a hypothesis but ranks below num_beams: why it was pruned
    "stop_token": "stop token",
    "constraint_complete": "completes the constraint",
    "max_new_tokens": "last step",
    "context_full": "last step",
}


def run_beam_search(decoder: Decoder, prompt_ids: list[int], config: BeamConfig) -> BeamResult:
    if not prompt_ids or not all(isinstance(i, int) for i in prompt_ids):
        raise BadInput(f"prompt_ids must be a non-empty list of token ids, got {prompt_ids!r}")
    started = time.perf_counter()
    # Prefill once: the search starts with a single live beam, the prompt (a prompt that fills the context is
    # refused here).
    # row b of ids / cache / logits is live[b]
    state = DecodeState(decoder.backend, prompt_ids, vocabulary=decoder.tokenizer.texts)
    stop_ids = decoder.stop_ids(token_ids=config.stop_token_ids)
    width, penalty = config.num_beams, config.length_penalty
    ranked = max(2, 1 + len(stop_ids)) * width  # K candidates ranked per step
    steps = min(config.max_new_tokens, state.room)
    limit = StopReason("max_new_tokens" if steps == config.max_new_tokens else "context_full")
    processors = config.processors(decoder)
    tree = BeamTree(stop_reason=limit.kind)
    root = tree.add(
        parent_id=None, step=-1, token_id=None, piece="", logprob=0.0, cum_logprob=0.0, rank=0, status="root"
    )
    beam_scores = torch.zeros(1, device=state.logits.device)  # (B,) float32 sum of logprobs of each live beam
    live = [LiveBeam(root.id, (), 0.0)]
    finished: list[BeamHypothesis] = []  # the num_beams best finished hypotheses, best first

    def ending(token_ids: list[int]) -> StopReason | None:
        """Why a candidate ending in these generated ids would end its hypothesis, or None: it goes on."""
        if token_ids[-1] in stop_ids:
            return StopReason("stop_token", token_id=token_ids[-1])
        if processors.ends_outputs and processors.complete(token_ids):
            return StopReason("constraint_complete")  # the grammar allows nothing more but the end
        return limit if len(token_ids) == steps else None

    for step in range(steps):
        generated = step + 1  # new tokens in a candidate of this step, its own included
        # Score every one-token expansion of every live beam: beam score + processed log-probability (a token
        # the constraint forbids: -inf), with what each processor did to each beam.
        model_logprobs = state.logits.log_softmax(dim=-1)  # (B, V)
        logprobs, reports = processors.traced(model_logprobs, state.history)  # (B, V)
        totals = beam_scores[:, None] + logprobs  # (B, V)
        # Rank the K best expansions over all beams; flat index -> (parent row, token). Forbidden expansions
        # (-inf) are never candidates: a step with fewer allowed expansions ranks fewer.
        top_totals, flat = totals.flatten().topk(min(ranked, totals.numel()))  # (K,)
        allowed = int(torch.isfinite(top_totals).sum())  # the -inf ones are last
        top_totals, flat = top_totals[:allowed], flat[:allowed]  # (K',)
        parent_rows, tokens = (flat // totals.shape[1]).tolist(), (flat % totals.shape[1]).tolist()
        scores = (top_totals / generated**penalty).tolist()  # (K',) what each would score if it ended now

        # Each candidate, best first: a live beam next step (the best num_beams that do not end), a finished
        # hypothesis (ends and ranks in the top num_beams), or pruned.
        kept_ranks: list[int] = []
        ended: list[BeamHypothesis] = []
        nodes: list[BeamNode] = []
        for rank, (row, token, total) in enumerate(zip(parent_rows, tokens, top_totals.tolist())):
            token_ids = [*live[row].token_ids, token]
            reason = ending(token_ids)
            node = tree.add(
                parent_id=live[row].node_id,
                step=step,
                token_id=token,
                piece=token_piece(decoder.tokenizer, token),
                logprob=float(logprobs[row, token]),
                cum_logprob=total,
                rank=rank,
                status="pruned",
            )
            nodes.append(node)
            if reason is None:
                if len(kept_ranks) < width:
                    node.status = "kept"
                    kept_ranks.append(rank)
                else:
                    node.note = f"beyond the {width} live beams"
            elif rank < width:
                node.score = scores[rank]
                text = decoder.tokenizer.decode(token_ids[:-1] if reason.kind == "stop_token" else token_ids)
                ended.append(BeamHypothesis(token_ids, text, scores[rank], total, reason, node.id))
            else:
                node.note = f"{ENDING_NOTES[reason.kind]}, ranked below the top {width}"

        # Keep the num_beams best finished hypotheses (earlier ones first among equal scores).
        finished = sorted(finished + ended, key=lambda h: -h.score)[:width]
        kept_hypotheses = {h.node_id for h in finished}
        for hypothesis in ended:
            node = tree.nodes[hypothesis.node_id]
            if hypothesis.node_id in kept_hypotheses:
                node.status, node.note = "finished", str(hypothesis.finished_by)
            else:
                node.note = f"ended ({hypothesis.finished_by}) below the {width} best finished"
        model_top = [top_alternatives(decoder.tokenizer, row.exp(), 1)[0] for row in model_logprobs]
        tree.steps.append(
            BeamStep(
                step,
                tuple(live),
                tuple(n.id for n in nodes),
                tuple(h for h in ended if h.node_id in kept_hypotheses),
                tuple(tuple(row) for row in reports),
                tuple(model_top),
            )
        )
        if not kept_ranks:  # the last step (every candidate ended), or, under a constraint, every one ended earlier
            if not finished:
                raise BadInput(
                    f"beam search found no allowed continuation at step {step}: the constraint and the penalties "
                    "together forbid every token; loosen one of them"
                )
            if generated < steps:
                tree.stop_reason = "no_live_beams"
            break

        # Can the live beams still beat the finished hypotheses? (transformers' stopping heuristics)
        best_live_total = top_totals[kept_ranks[0]]
        if len(finished) == width:
            if config.early_stopping is True:
                tree.stop_reason = "early_stopping"
                break
            optimistic = steps if config.early_stopping == "never" and penalty > 0 else generated
            if float(best_live_total / optimistic**penalty) <= finished[-1].score:
                tree.stop_reason = "no_better_possible"
                break

        # Continue the kept candidates: gather their parents' rows of ids and cache (a parent with two kept
        # children is duplicated, one with none dropped), then feed each its new token.
        rows = torch.tensor([parent_rows[r] for r in kept_ranks], device=state.ids.device)  # (B,)
        new_tokens = torch.tensor([tokens[r] for r in kept_ranks], device=state.ids.device)  # (B,)
        state.reorder(rows)
        state.advance(new_tokens)  # ids (B, T + 1), logits (B, V) for the next step
        beam_scores = top_totals[kept_ranks]  # (B,)
        live = [
            LiveBeam(nodes[r].id, (*live[parent_rows[r]].token_ids, tokens[r]), nodes[r].cum_logprob)
            for r in kept_ranks
        ]

    returned = finished[: config.num_return_sequences]
    tree.returned = [h.node_id for h in returned]
    return BeamResult(returned, tree, config, list(prompt_ids), time.perf_counter() - started)
