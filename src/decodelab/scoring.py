"""Scoring a text: how likely the model found each of its tokens, given everything before it.

    score_text(lm, " Paris.", prompt="The capital of France is")  # or score_text(lm, text); lm or lm.decoder
    score_ids(lm, prompt_ids + generated_ids, len(prompt_ids))

Every scored token gets its log-probability, probability, rank and surprisal, plus the entropy and nucleus
size of the model's whole next-token distribution at that position (from the same forward), and with
`top_n` the most likely tokens there (what the OpenAI server's `echo` reports as prompt `top_logprobs`). By the chain rule
log P(x) = sum_i log P(x_i | x_<i), so `total_logprob` is the sequence's log-probability given the prompt
and `perplexity` is exp(-mean logprob per scored token).

A text longer than the model's context is scored with sliding windows (the Hugging Face perplexity guide's
method): each window reads at most `context_length` ids and scores only tokens no earlier window scored, so
every token is scored exactly once with at least `context_length - stride` tokens of left context.

Each window streams through a KV cache in chunks of `PREFILL_CHUNK` positions, and a chunk's positions are
scored before the next chunk runs: logits peak at chunk x V (100 MB for SmolLM2), not window x V (1.6 GB
for an 8192-token window).
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from decodelab import decoding, views
from decodelab.decoder import Decoder, HasDecoder, as_decoder
from decodelab.errors import BadInput
from decodelab.generation_config import MAX_TOP_N
from decodelab.metrics import mean_entropy, mean_nucleus_size, nucleus_sizes
from decodelab.records import Alternative
from decodelab.tokenizer import Tokenizer
from decodelab.tokens import readable_piece, visible

if TYPE_CHECKING:
    import pandas

_ROWS_PER_BLOCK = 64  # positions whose (V,) statistics are computed at once: bounds the sort's memory


@dataclass(frozen=True)
class ScoredToken:
    """One token of the scored text and how the model saw it coming."""

    id: int
    piece: str  # readable text of the token (partial characters as <0xNN>)
    logprob: float  # natural log of P(token | the tokens before it)
    prob: float
    rank: int  # 1 + tokens strictly more likely at this position (1 = the model's top choice)
    surprisal_bits: float  # -log2 prob
    entropy: float  # of the model's whole next-token distribution here, nats (as Step.entropy)
    nucleus_size: int  # fewest most likely tokens holding `Score.nucleus_p` of that distribution's mass
    position: int  # index in the scored ids (prompt included)
    context: int  # tokens the model saw before this one: all of them unless a long text was windowed
    bytes: builtins.bytes = b""  # exact bytes the token adds to the text; left empty, its piece's UTF-8
    alternatives: tuple[Alternative, ...] = ()  # the top_n most likely tokens here, most likely first

    def __post_init__(self) -> None:
        if not self.bytes and self.piece:
            object.__setattr__(self, "bytes", self.piece.encode())

    def to_dict(self) -> dict:
        return {
            "position": self.position,
            "id": self.id,
            "piece": self.piece,
            "logprob": self.logprob,
            "prob": self.prob,
            "rank": self.rank,
            "surprisal_bits": self.surprisal_bits,
            "entropy": self.entropy,
            "nucleus_size": self.nucleus_size,
            "context": self.context,
            "bytes": list(self.bytes),
            "alternatives": [alternative.to_dict() for alternative in self.alternatives],
        }


@dataclass(frozen=True)
class Score:
    """Per-token scores of `ids[prompt_length:]` given what precedes each token, and their totals."""

    ids: list[int]  # prompt + scored ids
    prompt_length: int  # ids[:prompt_length] are context only
    tokens: list[ScoredToken]  # one per id in ids[prompt_length:], in order
    nucleus_p: float  # the mass `ScoredToken.nucleus_size` counts up to
    window: int  # most ids one forward read (the model's context length)
    stride: int  # new tokens scored per window after the first, when the text was longer than the window
    forwards: int  # windows read (each in chunks of positions): 1 unless the text was longer than the window

    @property
    def total_logprob(self) -> float:
        """log P(scored ids | prompt) in nats: the sum of the per-token logprobs (chain rule)."""
        return sum(token.logprob for token in self.tokens)

    @property
    def perplexity(self) -> float:
        """exp(-mean logprob per scored token): 1 for a certain text, V for uniform guessing."""
        return math.exp(-self.total_logprob / len(self.tokens))

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_length,
            "scored_tokens": len(self.tokens),
            "total_logprob": self.total_logprob,
            "perplexity": self.perplexity,
            "mean_entropy": mean_entropy(self.tokens),
            "mean_nucleus_size": mean_nucleus_size(self.tokens),
            "nucleus_p": self.nucleus_p,
            "forwards": self.forwards,
            "tokens": [token.to_dict() for token in self.tokens],
        }

    def table(self) -> str:
        """`pos  id  token  prob%  logprob  rank  surprisal` rows and a summary line, as `decodelab score` prints."""
        pieces = [visible(token.piece) for token in self.tokens]
        width = max([len(piece) for piece in pieces] + [5])
        rows = [
            f"{'pos':>5}  {'id':>6}  {'token':<{width}}  {'prob':>8}  {'logprob':>8}  {'rank':>6}  {'surprisal':>9}"
        ]
        for token, piece in zip(self.tokens, pieces):
            rows.append(
                f"{token.position:>5}  {token.id:>6}  {piece:<{width}}  {token.prob * 100:>7.2f}%  "
                f"{token.logprob:>8.3f}  {token.rank:>6}  {token.surprisal_bits:>5.2f} bits"
            )
        rows.append(
            f"{len(self.tokens)} tokens scored after {self.prompt_length} context tokens: "
            f"total logprob {self.total_logprob:.3f} nats, perplexity {self.perplexity:.3f}"
        )
        if self.forwards > 1:
            rows.append(
                f"longer than the context: {self.forwards} windows of {self.window} tokens, stride {self.stride}"
            )
        return "\n".join(rows)

    def _repr_html_(self) -> str:
        """Jupyter: the scored text, each token shaded by its probability; rank and surprisal on hover."""
        return views.html(self)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per scored token: position, id, piece, logprob, prob, rank, surprisal, entropy, nucleus size,
        context, bytes (needs pandas)."""
        return views.frame(self)


def score_text(
    model: Decoder | HasDecoder,
    text: str,
    prompt: str | None = None,
    *,
    stride: int | None = None,
    nucleus_p: float = 0.9,
    top_n: int = 0,
) -> Score:
    """Score `text`, as a continuation of `prompt` when one is given.

    `model` is an `LM` or its `Decoder`. With a prompt, every token of `text` is scored; the prompt is tokenized
    as `lm.generate(prompt)` would
    (special tokens included) and `text` without special tokens. Without a prompt, the first token has no
    context to be predicted from: if the tokenizer adds special tokens in front (a BOS), those are the
    context and every token of the text is scored; otherwise (GPT-2, SmolLM2) scoring starts at the text's
    second token. `stride`, `nucleus_p` and `top_n` are as in `score_ids`.
    """
    if not isinstance(text, str) or not text:
        raise BadInput(f"text is empty: give some text to score, got {text!r}")
    tokenizer = as_decoder(model).tokenizer
    if prompt is None:
        ids, prompt_length = _text_ids(tokenizer, text)
    else:
        if not isinstance(prompt, str) or not prompt:
            raise BadInput(f"prompt is empty ({prompt!r}): give some text, or no prompt to score the text on its own")
        # Tokenize the two parts separately and join the ids. Tokenizing prompt + text as one string could
        # merge characters across the boundary into one token ("The cat" + "s" -> "cats"), and then no token
        # would start where the continuation starts: its score would no longer be P(text | prompt).
        prompt_ids = tokenizer.encode(prompt)
        text_ids = tokenizer.encode(text, add_special_tokens=False)
        if not prompt_ids or not text_ids:
            empty = text if prompt_ids else prompt
            raise BadInput(f"the tokenizer turned {empty!r} into no tokens: nothing to score")
        ids, prompt_length = prompt_ids + text_ids, len(prompt_ids)
    return score_ids(model, ids, prompt_length, stride=stride, nucleus_p=nucleus_p, top_n=top_n)


def _text_ids(tokenizer: Tokenizer, text: str) -> tuple[list[int], int]:
    """Ids of a text scored on its own, and how many of them are context (a leading BOS, or the first token)."""
    with_specials = tokenizer.encode(text)
    plain = tokenizer.encode(text, add_special_tokens=False)
    lead = next(
        (k for k in range(len(with_specials) - len(plain) + 1) if with_specials[k : k + len(plain)] == plain), 0
    )
    if lead:
        return with_specials[:lead] + plain, lead  # the added BOS (or similar) is the first token's context
    if len(plain) < 2:
        raise BadInput(
            f"text {text!r} is {len(plain)} token: with no prompt the first token has no context to be scored "
            "against; give a longer text or a prompt"
        )
    return plain, 1


def score_ids(
    model: Decoder | HasDecoder,
    ids: list[int],
    prompt_length: int,
    *,
    stride: int | None = None,
    nucleus_p: float = 0.9,
    top_n: int = 0,
) -> Score:
    """Score `ids[prompt_length:]`, each token given all ids before it (prompt_length >= 1: the first has none).

    `stride` (default half the context) is how many new tokens each window scores when `ids` is longer than
    the model's context length; `nucleus_p` is the mass `ScoredToken.nucleus_size` counts up to; `top_n`
    (0..MAX_TOP_N) is how many of the most likely tokens each ScoredToken lists in `alternatives`.
    """
    decoder = as_decoder(model)
    _check_ids(ids, prompt_length, decoder.vocab_size)
    if isinstance(nucleus_p, bool) or not isinstance(nucleus_p, (int, float)) or not 0 < nucleus_p <= 1:
        raise BadInput(f"nucleus_p must be in (0, 1], got {nucleus_p!r}")
    if isinstance(top_n, bool) or not isinstance(top_n, int) or not 0 <= top_n <= MAX_TOP_N:
        raise BadInput(f"top_n must be a whole number in [0, {MAX_TOP_N}], got {top_n!r}")
    window = decoder.context_length
    stride = window // 2 if stride is None else stride
    if not isinstance(stride, int) or isinstance(stride, bool) or not 1 <= stride < window:
        raise BadInput(f"stride must be a whole number in [1, {window - 1}] (below the context length), got {stride!r}")
    plan = plan_windows(len(ids), prompt_length, window, stride)
    tokens: list[ScoredToken] = []
    for begin, start, end in plan:
        tokens += _score_window(decoder, ids, begin, start, end, nucleus_p, top_n)
    return Score(list(ids), prompt_length, tokens, float(nucleus_p), window, stride, len(plan))


def _score_window(
    decoder: Decoder, ids: list[int], begin: int, start: int, end: int, nucleus_p: float, top_n: int
) -> list[ScoredToken]:
    """Score ids[start:end] reading ids[begin:end], streamed through a fresh KV cache a chunk at a time."""
    backend, chunk = decoder.backend, decoding.PREFILL_CHUNK
    cache = backend.new_cache(1)
    window = torch.tensor([ids[begin:end]], device=decoder.device)  # (1, T), T <= context length
    # The logits at position i predict id i + 1: targets ids[start:end] read positions start-1 .. end-2.
    # The positions before start-1 are context only: fed through the cache, no logits kept.
    first = start - 1 - begin  # window position of the first logits needed
    if first > 0:
        decoding.prefill(backend, window[:, :first], cache, chunk)
    tokens: list[ScoredToken] = []
    for at in range(first, end - 1 - begin, chunk):
        piece = window[:, at : min(at + chunk, end - 1 - begin)]  # (1, t): the last id predicts nothing scored here
        logits = backend.forward(piece, cache)[0]  # (t, V) predicting targets ids[begin+at+1 : begin+at+t+1]
        tokens += _score_positions(decoder.tokenizer, logits, ids, begin + at + 1, begin, nucleus_p, top_n)
        del logits  # freed before the next chunk's forward: one chunk's logits live at a time
    return tokens


def plan_windows(length: int, first: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """The forwards that score ids[first:length] exactly once: (begin, start, end) reads ids[begin:end]
    and scores ids[start:end].

    Tokens that fit in the first `window` ids are scored together with their whole history. After that each
    window scores the next `stride` tokens and reaches back as far as `window` allows, so every token sees at
    least `window - stride` tokens before it (the last window, scoring fewer, sees more).
    """
    plan = []
    start = first
    while start < length:
        end = min(length, window if start < window else start + stride)
        plan.append((max(0, end - window), start, end))
        start = end
    return plan


def _check_ids(ids: object, prompt_length: object, vocab_size: int) -> None:
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise BadInput(f"ids must be a list of token ids (ints), got {ids!r:.80}")
    if len(ids) < 2:
        raise BadInput(f"ids has {len(ids)} token(s), got {ids!r}: scoring needs one of context and one to score")
    if not isinstance(prompt_length, int) or isinstance(prompt_length, bool) or not 1 <= prompt_length < len(ids):
        raise BadInput(
            f"prompt_length must be in [1, {len(ids) - 1}] for {len(ids)} ids (the first token has no context, "
            f"and at least one token must be scored), got {prompt_length!r}"
        )
    outside = [i for i in ids if not 0 <= i < vocab_size]
    if outside:
        raise BadInput(f"token id {outside[0]} is outside the vocabulary (0..{vocab_size - 1})")


def _score_positions(
    tokenizer: Tokenizer,
    logits: torch.Tensor,
    ids: list[int],
    start: int,
    begin: int,
    nucleus_p: float,
    top_n: int,
) -> list[ScoredToken]:
    """ScoredTokens for targets ids[start:start + n] from their predicting logits (n, V), read from ids[begin:]."""
    tokens = []
    for offset in range(0, logits.shape[0], _ROWS_PER_BLOCK):
        block = logits[offset : offset + _ROWS_PER_BLOCK]  # (b, V)
        first = start + offset
        targets = torch.tensor(ids[first : first + block.shape[0]], device=block.device)  # (b,)
        logprobs = block.log_softmax(dim=-1)  # (b, V)
        probs = logprobs.exp()
        chosen_logits = block.gather(1, targets[:, None])  # (b, 1)
        chosen = logprobs.gather(1, targets[:, None])[:, 0]  # (b,)
        ranks = (block > chosen_logits).sum(dim=-1) + 1  # (b,) strictly more likely, as Step.rank counts
        entropies = -torch.special.xlogy(probs, probs).sum(dim=-1)  # (b,) 0 * log 0 counts as 0
        nuclei = nucleus_sizes(probs, nucleus_p)  # (b,)
        for row, (token_id, logprob, rank, entropy, nucleus) in enumerate(
            zip(targets.tolist(), chosen.tolist(), ranks.tolist(), entropies.tolist(), nuclei.tolist())
        ):
            position, raw = first + row, tokenizer.token_bytes(token_id)
            tokens.append(
                ScoredToken(
                    id=token_id,
                    piece=readable_piece(raw),
                    logprob=logprob,
                    prob=math.exp(logprob),
                    rank=rank,
                    surprisal_bits=-logprob / math.log(2),
                    entropy=entropy,
                    nucleus_size=nucleus,
                    position=position,
                    context=position - begin,
                    bytes=raw,
                    alternatives=decoding.top_alternatives(tokenizer, probs[row], top_n),
                )
            )
    return tokens
