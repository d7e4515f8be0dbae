"""The next-token distribution: every token's probability after a prompt, and views of it for people."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from decodelab import views
from decodelab.errors import BadInput
from decodelab.tokenizer import Tokenizer
from decodelab.tokens import token_piece, visible

if TYPE_CHECKING:
    import pandas


@dataclass(frozen=True)
class Candidate:
    rank: int  # 1 = most likely
    id: int
    piece: str
    prob: float
    logprob: float

    def to_dict(self) -> dict:
        return {"rank": self.rank, "id": self.id, "piece": self.piece, "prob": self.prob, "logprob": self.logprob}


def reported_mask(logits: torch.Tensor) -> torch.Tensor:
    """(..., V) bool: the tokens a remote server reported. Their logits are their logprobs; the rest of the mass,
    not known token by token, is spread evenly over the others, which therefore share the row's most common
    value (`decodelab.remote.backend`). A row without a shared value was reported whole."""
    spread = logits.mode(dim=-1).values.unsqueeze(-1)  # (..., 1)
    shared = logits == spread
    return ~(shared & (shared.sum(dim=-1, keepdim=True) > 1))


class Distribution:
    """P(next token | prompt) over the whole vocabulary, as the model's softmax gives it.

    `logits`, `logprobs` and `probs` are full (V,) float32 tensors, so callers can go further than `top()`.
    `partial`: the logits come from a remote server that reported its top tokens only; `reported` marks them,
    their probabilities are the model's, and the rest of the mass (`1 - known_mass`) is not known token by token.
    """

    def __init__(self, logits: torch.Tensor, tokenizer: Tokenizer, prompt_ids: list[int], partial: bool = False):
        self.logits = logits.float()  # (V,)
        self.logprobs = torch.log_softmax(self.logits, dim=-1)  # (V,)
        self.probs = torch.softmax(self.logits, dim=-1)  # (V,)
        self.tokenizer = tokenizer
        self.prompt_ids = prompt_ids
        self.reported = reported_mask(self.logits) if partial else None  # (V,) bool, or None: all known

    @property
    def known_mass(self) -> float:
        """The probability of the tokens whose probability is known: 1.0 unless a server reported only some."""
        return 1.0 if self.reported is None else float(self.probs[self.reported].sum())

    @property
    def entropy(self) -> float:
        """Shannon entropy in nats (0 when one token is certain; ln V when all are equal). For a partial
        distribution, an upper bound (the unknown rest counted as spread evenly): see `entropy_bounds`."""
        return float(-torch.special.xlogy(self.probs, self.probs).sum())

    @property
    def entropy_bounds(self) -> tuple[float, float]:
        """(lowest, highest) entropy the distribution can have: equal for a whole one; for a partial one, the
        rest of the mass on one token, then spread evenly over all the others."""
        if self.reported is None:
            return self.entropy, self.entropy
        known = self.probs[self.reported]
        rest = torch.clamp(1 - known.sum(), min=0)
        lowest = float(-torch.special.xlogy(known, known).sum() - torch.special.xlogy(rest, rest))
        return lowest, self.entropy

    def top(self, n: int = 10) -> list[Candidate]:
        """The `n` most likely next tokens, most likely first (of a partial one: among the reported tokens)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BadInput(f"top must be a positive number of tokens, got {n!r}")
        known = self.probs if self.reported is None else self.probs.masked_fill(~self.reported, -1.0)
        count = self.probs.numel() if self.reported is None else int(self.reported.sum())
        probs, ids = torch.topk(known, min(n, count))  # a partial distribution's top: reported tokens only
        return [
            Candidate(rank, int(i), token_piece(self.tokenizer, int(i)), float(p), float(self.logprobs[i]))
            for rank, (p, i) in enumerate(zip(probs, ids), start=1)
        ]

    def prob(self, token_id: int) -> float:
        return float(self.probs[token_id])

    def rank(self, token_id: int) -> int:
        """1 + how many tokens are strictly more likely than `token_id`."""
        return int((self.probs > self.probs[token_id]).sum()) + 1

    def to_dict(self, n: int = 10) -> dict:
        values = {
            "prompt_tokens": len(self.prompt_ids),
            "entropy": self.entropy,
            "top": [candidate.to_dict() for candidate in self.top(n)],
        }
        if self.reported is not None:  # a remote server's top tokens: say what is not known
            values |= {
                "reported": int(self.reported.sum()),
                "known_mass": self.known_mass,
                "entropy_bounds": list(self.entropy_bounds),
            }
        return values

    def table(self, n: int = 10) -> str:
        """`rank  id  token  prob%  logprob` rows and the entropy, as `decodelab next` prints them."""
        candidates = self.top(n)
        pieces = [visible(candidate.piece) for candidate in candidates]
        width = max([len(piece) for piece in pieces] + [5])
        rows = [f"{'rank':>4}  {'id':>6}  {'token':<{width}}  {'prob':>8}  {'logprob':>8}"]
        for candidate, piece in zip(candidates, pieces):
            rows.append(
                f"{candidate.rank:>4}  {candidate.id:>6}  {piece:<{width}}  "
                f"{candidate.prob * 100:>7.2f}%  {candidate.logprob:>8.3f}"
            )
        shown = sum(candidate.prob for candidate in candidates)
        if self.reported is None:
            rows.append(f"top {len(candidates)} hold {shown * 100:.2f}% of the mass; entropy {self.entropy:.3f} nats")
        else:
            lowest, highest = self.entropy_bounds
            rows.append(
                f"top {len(candidates)} hold {shown * 100:.2f}% of the mass; the server reported "
                f"{int(self.reported.sum())} tokens holding {self.known_mass * 100:.2f}%, the rest is not known; "
                f"entropy between {lowest:.3f} and {highest:.3f} nats"
            )
        return "\n".join(rows)

    def _repr_html_(self) -> str:
        """Jupyter: the top 10 as a table with bars, and the entropy."""
        return views.html(self)

    def to_pandas(self, n: int = 10) -> pandas.DataFrame:
        """The `n` most likely next tokens: rank, id, piece, prob, logprob (needs pandas)."""
        return views.frame(self, n=n)
