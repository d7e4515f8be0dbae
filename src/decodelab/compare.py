"""Run several decoding strategies from the same prompt and seed, and measure what each one wrote.

Strategies are written as in the CLI: "greedy; beam:5; temperature:0.7; top_k:50; top_p:0.9; min_p:0.05",
and a strategy may combine settings with commas ("temperature:0.8,top_p:0.9"). Every output is scored
once under the model's *unmodified* distribution, which gives its log-probability, perplexity, mean
entropy and mean nucleus size along the path it took; diversity and repetition come from its token ids.
Given a constraint (`decodelab.constraints`), every strategy runs under it, and the table says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from decodelab import views
from decodelab.errors import BadInput
from decodelab.metrics import distinct_n, mean_entropy, mean_nucleus_size, repeated_ngram_rate
from decodelab.samplers import STAGES, Setting, all_settings
from decodelab.samplers.base import SCALAR_KINDS

if TYPE_CHECKING:
    import pandas

    from decodelab.constraints import Constraint
    from decodelab.decoder import Decoder, HasDecoder


def sampling_words() -> dict[str, Setting]:
    """Strategy word -> the setting it sets: every numeric setting by name, and a stage's name for its first
    setting when the two differ (`no_repeat_ngram:3` sets no_repeat_ngram_size)."""
    words = {declared.name: declared for declared in all_settings() if declared.kind in SCALAR_KINDS}
    for stage in STAGES.values():
        first = stage.settings[0]
        if first.kind in SCALAR_KINDS:
            words.setdefault(stage.name, first)
    return words


DEFAULT_STRATEGIES = "greedy; beam:5; temperature:0.7; top_k:50; top_p:0.9; min_p:0.05"


@dataclass(frozen=True)
class Strategy:
    label: str  # as written, e.g. "temperature:0.8,top_p:0.9"
    kind: str  # "greedy" | "beam" | "sample"
    options: dict = field(default_factory=dict)  # GenerationConfig fields, or {"num_beams": k}


def parse_strategies(spec: str) -> list[Strategy]:
    """'greedy; beam:5; temperature:0.7,top_p:0.9' -> Strategies; each bad word is one clear error."""
    strategies = [_parse_one(part.strip()) for part in spec.split(";") if part.strip()]
    if not strategies:
        raise BadInput(f"no strategies in {spec!r}: try {DEFAULT_STRATEGIES!r}")
    return strategies


def _parse_one(label: str) -> Strategy:
    if label == "greedy":
        return Strategy(label, "greedy", {"greedy": True})
    options = {}
    words = sampling_words()
    for setting in label.split(","):
        name, _, value = setting.strip().partition(":")
        if name == "beam":
            return Strategy(label, "beam", {"num_beams": _convert(name, value, int)})
        if name not in words:
            known = ", ".join(["greedy", "beam:K", *(f"{word}:X" for word in words)])
            raise BadInput(f"unknown strategy setting {name!r} in {label!r}: use {known}")
        declared = words[name]
        options[declared.name] = _convert(name, value, int if declared.kind == "int" else float)
    return Strategy(label, "sample", options)


def _convert(name: str, value: str, kind: type) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise BadInput(
            f"{name} needs a {kind.__name__} value, as in {name}:{'5' if kind is int else '0.9'}; got {value!r}"
        ) from None


@dataclass
class Outcome:
    """One strategy's output and its measurements."""

    strategy: Strategy
    text: str
    token_ids: list[int]
    stop_reason: str
    logprob: float  # log P(output | prompt) under the unmodified model
    perplexity: float
    mean_entropy: float  # nats, of the model's distribution at each step of the path
    mean_nucleus_size: float  # tokens holding 90% of the mass at each step
    distinct_1: float
    distinct_2: float
    repeated_3gram_rate: float

    def to_dict(self) -> dict:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "strategy"}
        return {"strategy": self.strategy.label, **values}


class Comparison(list[Outcome]):
    """The outcomes of `compare`, in strategy order: a list, plus a table, notebook HTML and a DataFrame."""

    constraint: Constraint | None = None  # the constraint every strategy ran under, if any

    def table(self) -> str:
        return comparison_table(self, self.constraint)

    def _repr_html_(self) -> str:
        """Jupyter: the metrics side by side, then each strategy's text."""
        return views.html(self)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per strategy (the index), one column per measurement and the text (needs pandas)."""
        return views.frame(self)


def compare(
    model: Decoder | HasDecoder,
    prompt_ids: list[int],
    strategies: list[Strategy],
    seed: int = 0,
    max_new_tokens: int = 64,
    constraint: Constraint | None = None,
) -> Comparison:
    """Each strategy from the same prompt and seed, measured the same way (`model`: an `LM` or its `Decoder`),
    every one under `constraint` when one is given."""
    from decodelab.beam import beam_search
    from decodelab.decoder import as_decoder
    from decodelab.engine import Generation, make_config
    from decodelab.scoring import score_ids

    decoder = as_decoder(model)
    stop_ids = decoder.stop_ids()
    outcomes = Comparison()
    outcomes.constraint = constraint
    common: dict[str, Any] = {"max_new_tokens": max_new_tokens, "constraint": constraint}  # every strategy's
    for strategy in strategies:
        if strategy.kind == "beam":
            best = beam_search(decoder, prompt_ids, **common, **strategy.options).sequences[0]
            ids, text, reason = best.token_ids, best.text, str(best.finished_by)
        else:
            config = make_config(None, {"seed": seed, **common, **strategy.options})
            result = Generation(decoder, prompt_ids, config).run()[0]
            ids, text, reason = result.token_ids, result.text, str(result.stop_reason)
        score = score_ids(decoder, prompt_ids + ids, len(prompt_ids)) if ids else None
        content = [i for i in ids if i not in stop_ids]  # diversity of what was written, not of its end
        outcomes.append(
            Outcome(
                strategy,
                text,
                ids,
                reason,
                logprob=score.total_logprob if score else 0.0,
                perplexity=score.perplexity if score else math.nan,
                mean_entropy=mean_entropy(score.tokens) if score else math.nan,
                mean_nucleus_size=mean_nucleus_size(score.tokens) if score else math.nan,
                distinct_1=distinct_n(content, 1),
                distinct_2=distinct_n(content, 2),
                repeated_3gram_rate=repeated_ngram_rate(content, 3),
            )
        )
    return outcomes


METRIC_ROWS: tuple[tuple[str, Callable[[Outcome], str]], ...] = (  # name, how one outcome shows it
    ("tokens", lambda o: str(len(o.token_ids))),
    ("logprob", lambda o: f"{o.logprob:.1f}"),
    ("perplexity", lambda o: f"{o.perplexity:.2f}"),
    ("mean entropy", lambda o: f"{o.mean_entropy:.2f}"),
    ("mean nucleus", lambda o: f"{o.mean_nucleus_size:.1f}"),
    ("distinct-1", lambda o: f"{o.distinct_1:.2f}"),
    ("distinct-2", lambda o: f"{o.distinct_2:.2f}"),
    ("repeated 3-grams", lambda o: f"{o.repeated_3gram_rate:.2f}"),
    ("stopped by", lambda o: o.stop_reason),
)


def comparison_table(outcomes: list[Outcome], constraint: Constraint | None = None) -> str:
    """Metrics side by side (one column per strategy), then each strategy's text; under a constraint, a first
    line says which."""
    labels = [o.strategy.label for o in outcomes]
    widths = [max(len(label), *(len(render(o)) for _, render in METRIC_ROWS)) for label, o in zip(labels, outcomes)]
    name_width = max(len(name) for name, _ in METRIC_ROWS)
    lines = ["  ".join([" " * name_width, *(label.rjust(w) for label, w in zip(labels, widths))])]
    for name, render in METRIC_ROWS:
        lines.append("  ".join([name.ljust(name_width), *(render(o).rjust(w) for o, w in zip(outcomes, widths))]))
    for outcome in outcomes:
        lines += ["", f"--- {outcome.strategy.label}", outcome.text.strip()]
    heading = [f"every strategy under the constraint {constraint.describe()}", ""] if constraint else []
    return "\n".join(heading + lines)
