"""What `decodelab score --jsonl` and `decodelab compare --jsonl` do with each input line, as a Python API.

    score_jsonl(lm, "texts.jsonl", "scores.jsonl", concurrency=8)
        a line {"id": 7, "text": " Paris.", "prompt": "The capital of France is"} ("prompt" and "id" optional)
        -> {"id": 7, "model", "mode", **Score.to_dict()}: what `decodelab score --json` prints for it
    compare_jsonl(lm, "prompts.jsonl", "outcomes.jsonl", strategies="greedy; top_p:0.9", concurrency=8)
        a line {"id": "q1", "prompt": "Once upon a time"} ("id" optional)
        -> {"id": "q1", "model", "mode", "prompt_tokens", "seed", "constraint", "outcomes"}: `compare --json`'s

A model on a server works on `concurrency` inputs at once (default `DEFAULT_CONCURRENCY`). A model run here works
on one at a time whatever `concurrency` says: each of its forwards already uses every core, so threads would only
take turns, and its compiled decode step (`compile=True`) keeps one set of static buffers that two threads would
share. See `decodelab.batch.runner` for errors, stopping and resuming.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from decodelab.batch.inputs import Item, read_items
from decodelab.batch.runner import BatchSummary, run_jsonl
from decodelab.cli.options import model_fields
from decodelab.compare import DEFAULT_STRATEGIES, Comparison, Strategy, compare, parse_strategies

if TYPE_CHECKING:
    from decodelab.constraints import Constraint
    from decodelab.model import LM

DEFAULT_CONCURRENCY = 4  # inputs in flight at once on a model on a server


def workers_for(lm: LM, concurrency: int | None) -> int:
    """The inputs `lm` works on at once: `concurrency` on a server (None: the default), one here (docstring)."""
    if lm.mode.remote is None:
        return 1
    return DEFAULT_CONCURRENCY if concurrency is None else concurrency


def score_items(path: str | Path) -> list[Item]:
    """The lines of a `score_jsonl` input file, checked whole."""
    return read_items(path, "text", ("prompt",))


def compare_items(path: str | Path) -> list[Item]:
    """The lines of a `compare_jsonl` input file, checked whole."""
    return read_items(path, "prompt")


def score_jsonl(
    lm: LM,
    inputs: str | Path | list[Item],
    out: str | Path,
    *,
    concurrency: int | None = None,
    quiet: bool = False,
) -> BatchSummary:
    """Score each line's "text" (after its "prompt", if any) into `out` (module docstring); `inputs` is the
    input file or its `score_items`; `quiet`: no progress bar."""
    items = inputs if isinstance(inputs, list) else score_items(inputs)

    def score_one(item: Item) -> dict:
        return lm.score(item.fields["text"], item.fields.get("prompt")).to_dict()

    return run_jsonl(
        items, out, score_one, stamp=model_fields(lm), concurrency=workers_for(lm, concurrency), quiet=quiet
    )


def compare_jsonl(
    lm: LM,
    inputs: str | Path | list[Item],
    out: str | Path,
    *,
    strategies: str | list[Strategy] = DEFAULT_STRATEGIES,
    seed: int = 0,
    max_new_tokens: int = 64,
    chat: bool = False,
    system: str | None = None,
    constraint: Constraint | None = None,
    concurrency: int | None = None,
    quiet: bool = False,
) -> BatchSummary:
    """Compare `strategies` on each line's "prompt" into `out` (module docstring); the options are `compare`'s
    and apply to every line; `chat`/`system` render each prompt as a user message; `inputs` as for
    `score_jsonl`."""
    parsed = parse_strategies(strategies) if isinstance(strategies, str) else strategies
    items = inputs if isinstance(inputs, list) else compare_items(inputs)

    def compare_one(item: Item) -> dict:
        ids = lm.prompt_ids(item.fields["prompt"], chat=chat or system is not None, system=system)
        outcomes = compare(lm, ids, parsed, seed=seed, max_new_tokens=max_new_tokens, constraint=constraint)
        return comparison_record(ids, seed, outcomes)

    return run_jsonl(
        items, out, compare_one, stamp=model_fields(lm), concurrency=workers_for(lm, concurrency), quiet=quiet
    )


def comparison_record(prompt_ids: list[int], seed: int, outcomes: Comparison) -> dict:
    """A comparison as `decodelab compare --json` prints it, after the model's fields."""
    constraint = outcomes.constraint
    return {
        "prompt_tokens": len(prompt_ids),
        "seed": seed,
        "constraint": None if constraint is None else constraint.to_dict(),
        "outcomes": [outcome.to_dict() for outcome in outcomes],
    }
