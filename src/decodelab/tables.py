"""pandas tables of decodelab's records: what each record's `to_pandas()` returns (dispatched by `views.frame`).

pandas is imported only when a table is made, and its absence is one clear error. Nothing in decodelab but
`decodelab.model` (which registers the views) imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from decodelab import views
from decodelab.beam_records import BeamTree
from decodelab.compare import Comparison
from decodelab.distribution import Distribution
from decodelab.errors import DecodelabError
from decodelab.records import Result
from decodelab.scoring import Score
from decodelab.tokens import TokenView

if TYPE_CHECKING:
    import pandas

STEP_COLUMNS = ("step", "id", "piece", "prob", "raw_prob", "logprob", "rank", "entropy", "row", "forced", "is_stop")


def data_frame(rows: Iterable[dict[str, Any]], index: str | None = None) -> pandas.DataFrame:
    """A pandas DataFrame of `rows` (one dict each); one clear error when pandas is not installed."""
    try:
        import pandas
    except ImportError:
        raise DecodelabError(
            "pandas is not installed: `pip install pandas` (or decodelab[notebook]) to use .to_pandas()"
        ) from None
    frame = pandas.DataFrame(list(rows))
    return frame.set_index(index) if index is not None and index in frame else frame


@views.frame.register(TokenView)
def token_view_frame(view: TokenView) -> pandas.DataFrame:
    """One row per token: id, piece, bytes (hex), start, end, special, and `text`: the characters its span
    covers (a Korean syllable split over several tokens shows on each of them)."""
    return data_frame({**token.to_dict(), "text": view.text[token.start : token.end]} for token in view)


@views.frame.register(Distribution)
def distribution_frame(dist: Distribution, n: int = 10) -> pandas.DataFrame:
    """The `n` most likely next tokens: rank, id, piece, prob, logprob."""
    return data_frame(candidate.to_dict() for candidate in dist.top(n))


@views.frame.register(Result)
def result_frame(result: Result) -> pandas.DataFrame:
    """One row per step: `STEP_COLUMNS` and the model's top choices."""
    rows = []
    for step in result.steps:
        values = step.to_dict()
        rows.append({**{name: values[name] for name in STEP_COLUMNS}, "choices": step.choices()})
    return data_frame(rows)


@views.frame.register(Score)
def score_frame(score: Score) -> pandas.DataFrame:
    """One row per scored token: position, id, piece, logprob, prob, rank, surprisal, entropy, nucleus size,
    context and bytes."""
    return data_frame(token.to_dict() for token in score.tokens)


@views.frame.register(BeamTree)
def beam_tree_frame(tree: BeamTree) -> pandas.DataFrame:
    """One row per node (the index is its id): parent, step, token, logprobs, rank, status."""
    return data_frame((node.to_dict() for node in tree.nodes), index="id")


@views.frame.register(Comparison)
def comparison_frame(outcomes: Comparison) -> pandas.DataFrame:
    """One row per strategy (the index), one column per measurement and the text."""
    return data_frame((outcome.to_dict() for outcome in outcomes), index="strategy")
