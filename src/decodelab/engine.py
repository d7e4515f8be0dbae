"""The traced generation loop: our own autoregressive decode (no `generate()`), yielding a `Step` per token.

    prefill(prompt) -> for each position: chain(logits) -> select -> Step -> stop? -> advance(token)

`Generation` runs `n` rows of one prompt in one batched forward per step (a row that stops leaves the batch);
iterate it for Steps as they happen, read `.results` when it is done. Its loop (`work()`) hands the model work
out as `decodelab.work` items: iterating the Generation runs them at once, the server batches them with other
requests' work. `stream_text` turns row 0 into text deltas that never split a
UTF-8 character and never show text a stop string later takes back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import fields
from typing import Any, cast

import torch

from decodelab import views
from decodelab.constraints import constraint_from_keywords
from decodelab.decoder import Decoder, HasDecoder, as_decoder
from decodelab.decoding import DecodeState, draw_seed, make_step, select
from decodelab.errors import BadInput
from decodelab.generation_config import MAX_TOP_N, GenerationConfig
from decodelab.prompt_logprobs import PromptLogprob, PromptScorer
from decodelab.records import Result, Step, StopReason
from decodelab.text_tracking import TextTracker
from decodelab.work import Work


def make_config(config: GenerationConfig | None, options: dict[str, Any]) -> GenerationConfig:
    """`config` with `options` applied (or a fresh config); unknown option names are one clear error. A
    constraint may be named by its kind (`json_schema=...`, `regex=...`; see `decodelab.constraints`)."""
    options = dict(options)
    if (constraint := constraint_from_keywords(options)) is not None:
        options["constraint"] = constraint
    known = {f.name for f in fields(GenerationConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise BadInput(f"unknown generation option {unknown[0]!r}: choose from {', '.join(sorted(known))}")
    return (config or GenerationConfig()).with_(**options) if options else (config or GenerationConfig())


class Generation:
    """One generation of `n` rows; iterate for Steps (rows interleaved per position), then read `results`."""

    def __init__(
        self,
        model: Decoder | HasDecoder,
        prompt_ids: list[int],
        config: GenerationConfig,
        n: int = 1,
        prefill_chunk: int | None = None,
        prompt_logprobs: int | None = None,
    ):
        """`prefill_chunk`: positions of the prompt read per forward (default `decoding.PREFILL_CHUNK`).
        `prompt_logprobs` (0..MAX_TOP_N): also score the prompt from its prefill, each token with that many most
        likely alternatives, into `prompt_scores` (no second forward; see `decodelab.prompt_logprobs`)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BadInput(f"n must be a whole number >= 1, got {n!r}")
        if prompt_logprobs is not None and not 0 <= prompt_logprobs <= MAX_TOP_N:
            raise BadInput(f"prompt_logprobs must be in [0, {MAX_TOP_N}], got {prompt_logprobs!r}")
        self.decoder = as_decoder(model)
        self.prompt_logprobs = prompt_logprobs
        self.prompt_scores: list[PromptLogprob] = []  # filled by the prefill when prompt_logprobs is set
        self.prompt_ids = prompt_ids
        self.config = config
        self.n = n
        self.prefill_chunk = prefill_chunk
        self.seed = config.seed if config.seed is not None else secrets.randbits(62)
        self.stop_ids = self.decoder.stop_ids(config.stop, config.stop_token_ids)
        self.results: list[Result] = []
        self._steps: list[list[Step]] = [[] for _ in range(n)]
        self._trackers = [TextTracker(config.stop) for _ in range(n)]

    def safe_text(self, row: int = 0) -> str:
        """Row text so far that no stop string can take back (whole characters only)."""
        return self._trackers[row].safe_text()

    def __iter__(self) -> Iterator[Step]:
        for item in self.work():
            if isinstance(item, Work):
                item.run()
            else:
                yield item

    def run(self) -> list[Result]:
        """Run to the end; return one `Result` per row."""
        for _ in self:
            pass
        return self.results

    def _repr_html_(self) -> str:
        """Jupyter: each row's trace once run (see `Result._repr_html_`); before that, how to run it."""
        return views.html(self)

    def work(self) -> Iterator[Step | Work]:
        """The generation loop, yielding each Step and, between them, the model work it needs next (the prompt's
        prefill chunks, then one Forward per position): whoever iterates runs each Work before the next item."""
        config, tokenizer = self.config, self.decoder.tokenizer
        started = time.perf_counter()
        chain = config.chain(self.decoder)
        row_seeds = [self.seed + row for row in range(self.n)]
        self._steps = [[] for _ in range(self.n)]  # a second iteration starts afresh
        self._trackers = trackers = [TextTracker(config.stop) for _ in range(self.n)]
        reasons: list[StopReason | None] = [None] * self.n
        state = DecodeState(
            self.decoder.backend,
            self.prompt_ids,
            rows=self.n,
            vocabulary=tokenizer.texts,
            prefilled=False,
            chunk=self.prefill_chunk,
        )
        scorer = None
        if self.prompt_logprobs is not None:
            scorer = PromptScorer(tokenizer, self.prompt_ids, self.prompt_logprobs)
            self.prompt_scores = scorer.tokens
        yield from state.prefilling(scorer)
        live = list(range(self.n))  # the rows still generating, in the order of the state's batch rows
        for position in range(config.max_new_tokens):
            raw = state.logits  # (B, V), B = len(live)
            seeds = [row_seeds[row] for row in live]
            history = state.seeded_history([draw_seed(seed, position) for seed in seeds])
            if config.trace:
                final, reports = chain.traced(raw, history)
            else:
                final, reports = chain(raw, history), None
            tokens = select(final, config.is_greedy, seeds, position)  # (B,)
            for index, (row, token) in enumerate(zip(live, tokens.tolist())):
                step = make_step(
                    tokenizer,
                    raw[index],
                    final[index],
                    token,
                    position,
                    config.top_n,
                    config.trace,
                    reports[index] if reports else None,
                    row,
                    stop_ids=self.stop_ids,
                )
                self._steps[row].append(step)
                if step.is_stop:
                    reasons[row] = StopReason("stop_token", token_id=token)
                elif (fired := trackers[row].add(step.bytes)) is not None:
                    reasons[row] = StopReason("stop_string", string=fired)
                elif chain.ends_outputs and chain.complete([s.token_id for s in self._steps[row]]):
                    reasons[row] = StopReason("constraint_complete")
                yield step
            if all(reason is not None for reason in reasons):
                break
            out_of_time = config.max_time is not None and time.perf_counter() - started >= config.max_time
            last_position = position == config.max_new_tokens - 1
            if out_of_time or last_position or state.room == 0:
                kind = "max_time" if out_of_time else "max_new_tokens" if last_position else "context_full"
                reasons = [reason or StopReason(kind) for reason in reasons]
                break
            memory = chain.remember(history, final, tokens) if chain.stateful else None
            going = [index for index, row in enumerate(live) if reasons[row] is None]
            if len(going) < len(live):  # rows that stopped leave the batch, with their cache rows
                keep = torch.tensor(going, device=tokens.device)
                state.reorder(keep)
                tokens, live = tokens[keep], [live[index] for index in going]
                memory = {name: value[keep] for name, value in memory.items()} if memory is not None else None
            yield state.push(tokens, memory)
        elapsed = time.perf_counter() - started
        self.results = [
            Result(
                trackers[row].finish(),
                [s.token_id for s in self._steps[row]],
                cast(StopReason, reasons[row]),  # every row has its reason once the loop ends
                self._steps[row],
                list(self.prompt_ids),
                row_seeds[row],
                elapsed,
            )
            for row in range(self.n)
        ]


def stream_text(generation: Generation) -> Iterator[str]:
    """Text deltas of row 0 as it is generated: whole characters only, stop strings never shown."""
    shown = 0
    for step in generation:
        if step.row == 0:
            safe = generation.safe_text(0)
            if len(safe) > shown:
                yield safe[shown:]
                shown = len(safe)
    final = generation.results[0].text
    if len(final) > shown:
        yield final[shown:]
