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


class Distribution:
    """P(next token | prompt) over the whole vocabulary, as the model's softmax gives it.

    `logits`, `logprobs` and `probs` are full (V,) float32 tensors, so callers can go further than `top()`.
    """

    def __init__(self, logits: torch.Tensor, tokenizer: Tokenizer, prompt_ids: list[int]):
        self.logits = logits.float()  # (V,)
        self.logprobs = torch.log_softmax(self.logits, dim=-1)  # (V,)
        self.probs = torch.softmax(self.logits, dim=-1)  # (V,)
        self.tokenizer = tokenizer
        self.prompt_ids = prompt_ids

    @property
    def entropy(self) -> float:
        """Shannon entropy in nats (0 when one token is certain; ln V when all are equal)."""
        return float(-torch.special.xlogy(self.probs, self.probs).sum())

    def top(self, n: int = 10) -> list[Candidate]:
        """The `n` most likely next tokens, most likely first."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BadInput(f"top must be a positive number of tokens, got {n!r}")
        probs, ids = torch.topk(self.probs, min(n, self.probs.numel()))
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
        return {
            "prompt_tokens": len(self.prompt_ids),
            "entropy": self.entropy,
            "top": [candidate.to_dict() for candidate in self.top(n)],
        }

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
        rows.append(f"top {len(candidates)} hold {shown * 100:.2f}% of the mass; entropy {self.entropy:.3f} nats")
        return "\n".join(rows)

    def _repr_html_(self) -> str:
        """Jupyter: the top 10 as a table with bars, and the entropy."""
        return views.html(self)

    def to_pandas(self, n: int = 10) -> pandas.DataFrame:
        """The `n` most likely next tokens: rank, id, piece, prob, logprob (needs pandas)."""
        return views.frame(self, n=n)
