"""`dry`: DRY ("Don't Repeat Yourself"), llama.cpp's penalty on tokens that would extend a verbatim repeat.

If the text ends with a run of tokens that already appeared earlier, the token that followed that earlier
occurrence would lengthen the repeat. DRY subtracts `multiplier * base ** (length - allowed_length)` from its
logit, where `length` is the longest such run (at least `allowed_length`) it would extend. Sequence breakers
(newline, ':', '"', '*' by default) cut the search: a repeat never reaches back across the most recent one, so
a list's items or a dialogue's names can recur freely.

The semantics are llama.cpp's `llama_sampler_dry` (ported there from koboldcpp, designed by p-e-w):
the context is prompt + generated ids, `dry_penalty_last_n` -1 means all of it and 0 turns DRY off, a token
that is a breaker on its own is never penalized, and the exponent is capped so the penalty stays finite in
float32. Two deliberate differences: breakers longer than 40 bytes are refused (llama.cpp cuts them to 40),
and an empty breaker list is allowed (no breakers) rather than refused as llama.cpp's server does.

Breakers are text but a stage sees token ids. As llama.cpp does once at init, `sequence_breakers` scans every
token's text (`History.vocabulary`): a token whose text contains a breaker breaks on its own; a token that ends
with the start of a breaker is a head, and breaks when the tokens after it spell the breaker's rest. llama.cpp
tokenizes that rest and wants exactly those tokens; with texts alone the rest is matched as text, so any
tokenization of it counts (the canonical one included). A token decoded alone to partial UTF-8 (U+FFFD in the
vocabulary) cannot start a breaker, where llama.cpp matches raw bytes (koboldcpp, too, skips multi-token
breakers made only of non-ASCII characters).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from decodelab.errors import Unsupported
from decodelab.samplers.base import History, Stage, is_number, is_whole, setting
from decodelab.samplers.registry import register

MAX_BREAKER_BYTES = 40  # llama.cpp's MAX_CHAR_LEN
MAX_TAIL_TOKENS = 20  # llama.cpp's MAX_SEQ_LEN: at most this many tokens after a head are matched
FLOAT_MAX_LOG = 88.7228391  # ln(FLT_MAX): base ** exponent stays finite in float32 below this
DEFAULT_BREAKERS = ("\n", ":", '"', "*")  # llama.cpp's and text-generation-webui's defaults

# head token id -> the rests of breakers that must follow it as text; "" = the head breaks on its own
Breakers = Mapping[int, tuple[str, ...]]


def _utf8_length(text: object) -> int | None:
    try:
        return len(text.encode()) if isinstance(text, str) else None
    except UnicodeEncodeError:  # a lone surrogate, as JSON can carry ("\ud800")
        return None


def _is_breaker_list(value: object) -> bool:
    return isinstance(value, (tuple, list)) and all(
        (length := _utf8_length(text)) is not None and 1 <= length <= MAX_BREAKER_BYTES for text in value
    )


@register
@dataclass(frozen=True)
class Dry(Stage):
    """DRY: subtract a growing penalty from tokens that would extend a verbatim repeat of earlier text (llama.cpp)."""

    dry_multiplier: float = setting(
        kind="float",
        off=(0.0,),
        metavar="M",
        slider=(0.0, 2.0, 0.05),
        allowed="must be a number >= 0 (0 turns it off)",
        check=lambda value: is_number(value) and value >= 0,
        help="penalty on a token extending a repeat: M * base^(length - allowed length) off its logit "
        "(0 = off; 0.8 is typical)",
    )
    dry_base: float = setting(
        kind="float",
        default=1.75,
        metavar="BASE",
        slider=(1.05, 3.0, 0.05),
        allowed="must be a number > 1",
        check=lambda value: is_number(value) and value > 1,
        help="> 1: how fast the penalty grows with each further repeated token",
    )
    dry_allowed_length: int = setting(
        kind="int",
        default=2,
        metavar="N",
        slider=(1, 8, 1),
        allowed="must be a whole number >= 1",
        check=lambda value: is_whole(value) and value >= 1,
        help="repeats this long go free; extending one further is penalized",
    )
    dry_penalty_last_n: int = setting(
        kind="int",
        default=-1,
        metavar="N",
        allowed="must be a whole number of tokens >= 1, -1 (the whole context) or 0 (off)",
        check=lambda value: is_whole(value) and value >= -1,
        help="how many recent tokens, prompt included, to search for repeats (-1 = all, 0 = off)",
    )
    dry_sequence_breakers: tuple[str, ...] = setting(
        kind="strings",
        default=DEFAULT_BREAKERS,
        metavar="TEXT",
        allowed=f"must be a list of non-empty strings of at most {MAX_BREAKER_BYTES} bytes (UTF-8) each",
        check=_is_breaker_list,
        help='text that ends a repeat: none reaches back across it (default: newline : " *; '
        "giving any replaces them all)",
    )
    name: ClassVar[str] = "dry"
    warper: ClassVar[bool] = False
    position: ClassVar[int] = 55

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> Stage | None:
        if values["dry_penalty_last_n"] == 0:  # no window: llama.cpp builds no DRY sampler either
            return None
        return super().from_config(values)

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        if self.dry_multiplier == 0 or self.dry_penalty_last_n == 0:
            return logits.clone()
        vocabulary = history.vocabulary or ()
        return dry_penalized(
            logits,
            history.ids,
            self.breakers(history),
            vocabulary,
            self.dry_multiplier,
            self.dry_base,
            self.dry_allowed_length,
            self.dry_penalty_last_n,
        )

    def breakers(self, history: History) -> Breakers:
        """The breakers as head token ids, found in the token texts the history carries."""
        texts = tuple(self.dry_sequence_breakers)
        if not texts:
            return {}
        if history.vocabulary is None:
            raise Unsupported(
                "dry_sequence_breakers are text, and this decode loop gives the samplers no token texts "
                "(History.vocabulary) to find them in: pass dry_sequence_breakers=[] to run DRY without breakers"
            )
        return cached_sequence_breakers(history.vocabulary, texts)


def dry_penalized(
    logits: torch.Tensor,
    ids: torch.Tensor,
    breakers: Breakers,
    vocabulary: Sequence[str],
    multiplier: float,
    base: float,
    allowed_length: int,
    penalty_last_n: int,
) -> torch.Tensor:
    """New logits (B, V): each row's DRY penalties over its context `ids` (B, T), subtracted in one scatter.
    `vocabulary` (token texts) is read only to match the rest of a breaker after its head."""
    rows: list[int] = []
    columns: list[int] = []
    penalties: list[float] = []
    # Cap the exponent so base ** exponent stays below FLT_MAX (llama.cpp: only when base > 1.000001).
    max_exponent = int(FLOAT_MAX_LOG / math.log(base)) if base > 1.000001 else 0
    for row, context in enumerate(ids.tolist()):
        window = context if penalty_last_n == -1 else context[-penalty_last_n:]
        for token, length in longest_repeats(window, breakers, vocabulary, allowed_length).items():
            if "" in breakers.get(token, ()):
                continue  # a breaker on its own ends any repeat, so it is never penalized (llama.cpp)
            exponent = length - allowed_length
            if max_exponent > 0:
                exponent = min(exponent, max_exponent)
            try:
                penalty = multiplier * base**exponent
            except OverflowError:  # a huge base with no cap: float32 would hold inf too
                penalty = math.inf
            rows.append(row)
            columns.append(token)
            penalties.append(-penalty)
    if not rows:
        return logits.clone()
    where = (torch.tensor(rows, device=logits.device), torch.tensor(columns, device=logits.device))  # (K,), (K,)
    values = torch.tensor(penalties, dtype=logits.dtype, device=logits.device)  # (K,)
    return logits.index_put(where, values, accumulate=True)  # each (row, token) appears once


def longest_repeats(
    window: Sequence[int], breakers: Breakers, vocabulary: Sequence[str], allowed_length: int
) -> dict[int, int]:
    """token -> the longest repeat (>= allowed_length tokens, clamped at the last breaker) it would extend."""
    size = len(window)
    if size <= allowed_length:
        return {}
    limit = restart_limit(window, breakers, vocabulary)
    if limit < allowed_length:  # too few tokens since the last breaker for any penalty
        return {}
    # Position j (< size - 1) ends a run that matches the window's end for `matched[size - 1 - j]` tokens;
    # the token after it, window[j + 1], would lengthen that repeat.
    reverse = list(reversed(window))
    matched = z_function(reverse)  # (size,): matched[k] = common prefix of reverse and reverse[k:]
    longest: dict[int, int] = {}
    for shift in range(1, size):
        length = min(matched[shift], limit)  # never reach back across the most recent breaker
        if length >= allowed_length:
            token = reverse[shift - 1]  # = window[j + 1] with j = size - 1 - shift
            if length > longest.get(token, -1):
                longest[token] = length
    return longest


def restart_limit(window: Sequence[int], breakers: Breakers, vocabulary: Sequence[str]) -> int:
    """How many tokens follow the most recent complete breaker in `window` (all of them when there is none)."""
    size = len(window)
    for back in range(size):  # `back` tokens come after this one; newest first
        rests = breakers.get(window[size - 1 - back])
        if not rests:
            continue
        # The head counts when the tokens after it spell one of its rests; the longest such tail wins.
        following = window[size - back :]
        longest = max((tail_length(rest, following, vocabulary) for rest in rests), default=-1)
        if longest >= 0:
            return back - longest
    return size


def tail_length(rest: str, following: Sequence[int], vocabulary: Sequence[str]) -> int:
    """How many of the `following` tokens spell `rest` exactly (0 for ""), or -1 when they do not.
    Like llama.cpp, which keeps MAX_TAIL_TOKENS tokens of a tail, a rest still unfinished after that many
    tokens counts as spelled."""
    spelled = ""
    for count, token in enumerate(following[:MAX_TAIL_TOKENS]):
        if spelled == rest:
            return count
        spelled += vocabulary[token] if token < len(vocabulary) else "\ufffd"
        if not rest.startswith(spelled):
            return -1
    if spelled == rest or len(following) >= MAX_TAIL_TOKENS:
        return min(len(following), MAX_TAIL_TOKENS)
    return -1


def z_function(sequence: Sequence[int]) -> list[int]:
    """z[k] = length of the longest common prefix of `sequence` and `sequence[k:]` (z[0] = 0), in O(n).

    Over the reversed window this is llama.cpp's "reverse Z-algorithm": z[k] is how far the tokens ending k
    places before the newest one match the newest ones. llama.cpp clamps to the breaker limit inside the loop;
    clamping afterwards gives the same numbers (a clamped value only ever stands for one at least as long)."""
    size = len(sequence)
    z = [0] * size
    left = right = 0  # sequence[left:right] == sequence[:right - left], the rightmost such box found so far
    for k in range(1, size):
        if k < right:
            z[k] = min(right - k, z[k - left])  # what the box already tells us about position k
        while k + z[k] < size and sequence[z[k]] == sequence[k + z[k]]:
            z[k] += 1  # extend by direct comparison past the box
        if k + z[k] > right:
            left, right = k, k + z[k]
    return z


# Breakers per (vocabulary, breaker texts), kept by identity for the last few vocabularies: scanning 150k token
# texts takes a moment, so it happens once. Each entry holds its vocabulary, so its id cannot be reused meanwhile.
_CACHE_SIZE = 8
_BREAKERS: OrderedDict[tuple[int, tuple[str, ...]], tuple[Sequence[str], Breakers]] = OrderedDict()


def cached_sequence_breakers(vocabulary: Sequence[str], texts: tuple[str, ...]) -> Breakers:
    key = (id(vocabulary), texts)
    if key in _BREAKERS:
        _BREAKERS.move_to_end(key)
        return _BREAKERS[key][1]
    found = sequence_breakers(vocabulary, texts)
    _BREAKERS[key] = (vocabulary, found)
    while len(_BREAKERS) > _CACHE_SIZE:
        _BREAKERS.popitem(last=False)
    return found


def sequence_breakers(vocabulary: Sequence[str], texts: Iterable[str]) -> Breakers:
    """Breaker texts -> head token ids, llama.cpp's `get_overlapping_token_sequences` over every token's text.

    A token whose text contains a breaker is a breaker on its own (rest ""). A token that ends with a proper
    start of a breaker is the head of a longer one, whose rest must follow. With one-character breakers, as the
    defaults are, only the first kind occurs."""
    found: dict[int, list[str]] = {}
    for text in texts:
        for token, piece in enumerate(vocabulary):
            if text in piece:
                rests = [""]
            else:
                # Every place the breaker's first character occurs: does the token end with its start there?
                rests = [
                    text[len(piece) - start :]
                    for start in _occurrences(piece, text[0])
                    if text.startswith(piece[start:])
                ]
            for rest in rests:
                if rest not in found.setdefault(token, []):
                    found[token].append(rest)
    return {token: tuple(rests) for token, rests in found.items() if rests}


def _occurrences(text: str, char: str) -> Iterable[int]:
    start = text.find(char)
    while start >= 0:
        yield start
        start = text.find(char, start + 1)
