"""Constrained decoding: a grammar that removes, at each step, every token that cannot continue a valid output.

    Constraint.json_schema({...}) | .json_object() | .regex(r"...") | .choice(["yes", "no"]) | .grammar(lark)

A `Constraint` is a value (what the output must match); `ConstraintStage` is the sampler stage that applies it,
first in the chain (as vLLM applies its allowed-token mask before the sampling parameters), so its
`StageReport` says how many tokens the grammar allowed and how much of the model's probability it removed.

The grammar engine is llguidance (the one llama.cpp and vLLM use): its token mask for SmolLM2's 49,152-token
vocabulary takes ~0.3 ms a step (`bench/constraints.py`). A matcher's state is a function of the tokens
generated so far, so the stage holds no hidden position: each step it aligns a small pool of matchers to each
row's generated ids, rolling back to the longest prefix a matcher already consumed and consuming the rest.
Undo, fork, replay, beams and forced tokens therefore follow exactly, by rollback rather than a replay from
scratch. When a row's grammar is complete (nothing may follow but the end), the stage says so and the row
stops with the stop reason `constraint_complete`.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from decodelab.errors import BadInput
from decodelab.samplers.base import FILTERED, History, Stage

if TYPE_CHECKING:
    from decodelab.tokenizer import Tokenizer

KINDS = ("json_schema", "json_object", "regex", "choice", "grammar")
SPARE_MATCHERS = 8  # matchers kept beyond the rows of the last step
JSON_OPTIONS = {"whitespace_flexible": False}  # compact JSON: no whitespace for a small model to wander into
# The grammar engine's resource limits, tighter than llguidance's defaults so that one hostile pattern
# (`a{1000000}`) costs a server ~0.2 s of a step rather than seconds, and a matcher's lexer stays under ~40 MB:
# past them the constraint is one clear error. ("Fuel" is llguidance's unit of lexer work, ~14-50k per ms.)
ENGINE_LIMITS = {
    "initial_lexer_fuel": 200_000,  # building the lexer (default 1,000,000)
    "step_lexer_fuel": 50_000,  # one token's mask (default 200,000)
    "max_lexer_states": 20_000,  # ~1-2 kB each (default 250,000)
    "verbose_errors": False,  # errors name the problem, not the parser's whole state
}


def _llguidance():
    import llguidance

    return llguidance


def engine_limits():
    return _llguidance().LLParserLimits(**ENGINE_LIMITS)


@dataclass(frozen=True)
class Constraint:
    """What every output must match: `kind` (one of KINDS) and its `source` (schema JSON, regex, grammar text,
    or the choices as a JSON list). Checked once, here: a bad schema or pattern is one clear error."""

    kind: str
    source: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BadInput(f"constraint kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.source, str) or not self.source:
            raise BadInput(f"a {self.kind} constraint needs its source as text, got {str(self.source)[:60]!r}")
        try:
            grammar = self.grammar_text()
        except ValueError as unreadable:  # a source that is not what its kind reads (`Constraint("choice", "yes")`)
            raise BadInput(
                f"the {self.kind.replace('_', ' ')} constraint does not compile: {one_line(str(unreadable))}"
            ) from None
        problem = _llguidance().LLMatcher.validate_grammar(grammar, limits=engine_limits())
        if problem:
            raise BadInput(f"the {self.kind.replace('_', ' ')} constraint does not compile: {one_line(problem)}")

    @classmethod
    def json_schema(cls, schema: dict | str) -> Constraint:
        """Output is JSON valid under `schema` (a dict, or its JSON text)."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as error:
                raise BadInput(f"the JSON schema is not JSON: {error}") from None
        if not isinstance(schema, dict):
            raise BadInput(f"a JSON schema must be a JSON object, got {str(schema)[:80]}")
        return cls("json_schema", json.dumps(schema, ensure_ascii=False))  # property order kept: it is the output's

    @classmethod
    def json_object(cls) -> Constraint:
        """Output is any JSON object."""
        return cls("json_object", '{"type": "object"}')

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """Output matches `pattern` whole (Rust regex syntax, as llguidance takes it)."""
        if not isinstance(pattern, str) or not pattern:
            raise BadInput(f"a regex constraint needs a non-empty pattern, got {pattern!r}")
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: Sequence[str]) -> Constraint:
        """Output is exactly one of `options`."""
        if isinstance(options, str) or not options or not all(isinstance(o, str) and o for o in options):
            raise BadInput(f"a choice constraint needs a list of non-empty strings, got {str(options)[:80]}")
        return cls("choice", json.dumps(list(options), ensure_ascii=False))

    @classmethod
    def grammar(cls, text: str) -> Constraint:
        """Output is a sentence of a context-free grammar: llguidance's Lark (`start: ...`), or GBNF (`root ::=
        ...`, llama.cpp's), converted to Lark."""
        if not isinstance(text, str) or not text.strip():
            raise BadInput("a grammar constraint needs the grammar's text, got nothing")
        if "::=" in text:
            from llguidance.gbnf_to_lark import gbnf_to_lark

            try:
                text = gbnf_to_lark(text)
            except Exception as error:  # the converter's own parse errors, of several types
                raise BadInput(f"the GBNF grammar does not parse: {error}") from None
        return cls("grammar", text)

    def grammar_text(self) -> str:
        """The grammar as llguidance takes it."""
        matcher = _llguidance().LLMatcher
        if self.kind in ("json_schema", "json_object"):
            return matcher.grammar_from_json_schema(self.source, defaults=JSON_OPTIONS)
        if self.kind == "regex":
            return matcher.grammar_from_regex(self.source)
        if self.kind == "choice":
            options = json.loads(self.source)
            if not isinstance(options, list) or not options or not all(isinstance(o, str) and o for o in options):
                raise ValueError(f"choices are a JSON list of non-empty strings, got {self.source[:60]}")
            return matcher.grammar_from_lark("start: " + " | ".join(json.dumps(o, ensure_ascii=False) for o in options))
        return matcher.grammar_from_lark(self.source)

    def describe(self) -> str:
        """One line for tables and traces: 'json_schema {"properties": ...' (cut at 60 characters)."""
        source = self.source if len(self.source) <= 60 else self.source[:57] + "..."
        return f"{self.kind} {source}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "source": self.source}


def one_line(error: str, limit: int = 300) -> str:
    """llguidance's error text (several lines, sometimes its whole parser state) as one short line."""
    lines = [" ".join(line.split()) for line in error.strip().splitlines()]
    first = lines[0] if lines else ""
    cause = next((line for line in lines[1:] if line.startswith("error:")), None)  # a regex's: "error: unclosed group"
    if cause:
        first = f"{first.rstrip(':')}: {cause.removeprefix('error:').strip()}"
    return first if len(first) <= limit else first[: limit - 3] + "..."


KEYWORDS = ("json_schema", "json_object", "regex", "choice", "grammar")  # lm.generate(..., regex=r"\d+")


def constraint_from_keywords(options: dict[str, Any]) -> Constraint | None:
    """The constraint a call's keywords name (`json_schema=`, `json_object=True`, `regex=`, `choice=`,
    `grammar=`), removed from `options`; None when it names none. Two at once are one clear error."""
    named = {key: options.pop(key) for key in KEYWORDS if key in options}
    named = {key: value for key, value in named.items() if value is not None and value is not False}
    if len(named) > 1:
        raise BadInput(f"give one constraint at a time, got {', '.join(named)}")
    if not named:
        return None
    ((key, value),) = named.items()
    if key == "json_object":
        if value is not True:
            raise BadInput(f"json_object must be true or false, got {value!r}")
        return Constraint.json_object()
    return getattr(Constraint, key)(value)


# --- llguidance's view of a decodelab tokenizer -------------------------------------------------------------------


class _TokenTable:
    """What llguidance's TokenizerWrapper reads: each id's exact bytes, the stop ids, and how to encode text."""

    def __init__(self, tokenizer: Tokenizer, stop_ids: Collection[int]):
        self._tokenizer = tokenizer
        self.tokens = [tokenizer.token_bytes(token_id) for token_id in range(tokenizer.vocab_size)]
        self.eos_token_id = min(stop_ids)
        self.bos_token_id = None
        self.special_token_ids = [i for i in range(tokenizer.vocab_size) if tokenizer.is_special(i)]

    def __call__(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)


_GRAMMAR_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def grammar_tokenizer(tokenizer: Tokenizer, stop_ids: Collection[int], vocab_size: int):
    """llguidance's tokenizer for `tokenizer` (built once per tokenizer and stop set, ~1 s for 49,152 tokens);
    `vocab_size` is the model's (its logits may have more rows than the tokenizer has tokens)."""
    llguidance = _llguidance()
    key = (tuple(sorted(stop_ids)), vocab_size)
    built = _GRAMMAR_TOKENIZERS.setdefault(tokenizer, {})
    if key not in built:
        wrapper = llguidance.TokenizerWrapper(_TokenTable(tokenizer, stop_ids))
        built[key] = llguidance.LLTokenizer(wrapper, n_vocab=vocab_size, eos_token=sorted(stop_ids))
    return built[key]


# --- matchers that follow the rows' histories -----------------------------------------------------------------------


class MatcherPool:
    """llguidance matchers, each with the tokens it consumed; `align(rows)` gives one matcher per row, moved to
    that row's generated ids by rolling back to the longest common prefix and consuming the rest."""

    def __init__(self, constraint: Constraint, tokenizer: Any):
        self._llguidance = _llguidance()
        self._tokenizer = tokenizer
        self._grammar = constraint.grammar_text()
        self._pool: list[tuple[tuple[int, ...], Any]] = []  # (consumed ids, matcher)
        self.constraint = constraint

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.vocab_size

    def _fresh(self) -> tuple[tuple[int, ...], Any]:
        return (), self._llguidance.LLMatcher(self._tokenizer, self._grammar, log_level=0, limits=engine_limits())

    def align(self, rows: list[list[int]], all_rows: bool = True) -> list[Any]:
        """One matcher per row, each having consumed exactly that row's ids (a forbidden id: BadInput).
        `all_rows`: these are every row of the batch (other matchers are spares now); False: one row asks
        (`complete`), and the other rows' matchers stay as they are."""
        free: dict[tuple[int, ...], list[Any]] = {}
        for consumed, matcher in self._pool:
            free.setdefault(consumed, []).append(matcher)
        taken: dict[tuple[int, ...], Any] = {}
        aligned: list[tuple[tuple[int, ...], Any]] = []
        for row in rows:
            ids = tuple(row)
            consumed, matcher = self._nearest(ids, free, taken)
            common = _common_prefix(consumed, ids)
            if common < len(consumed):
                matcher.rollback(len(consumed) - common)
            rest = list(ids[common:])
            if rest and matcher.try_consume_tokens(rest) != len(rest):
                if matcher.is_error():
                    raise _cannot_go_on(self.constraint, len(ids), matcher)
                raise BadInput(
                    f"token {rest[0] if len(rest) == 1 else rest} breaks the {self.constraint.kind.replace('_', ' ')} "
                    f"constraint ({one_line(matcher.get_error()) or 'not allowed here'}): choose a token the "
                    "constraint allows"
                )
            taken.setdefault(ids, matcher)
            aligned.append((ids, matcher))
        spares = [(consumed, m) for consumed, matchers in free.items() for m in matchers]
        spares = spares[:SPARE_MATCHERS] if all_rows else spares
        self._pool = aligned + spares  # spares: rows that left, histories an undo may return to
        return [matcher for _, matcher in aligned]

    def _nearest(self, ids: tuple[int, ...], free: dict, taken: dict) -> tuple[tuple[int, ...], Any]:
        """A matcher to move to `ids`, cheapest first: a free one at `ids` or at its parent (one token back: every
        step of a decode); a copy of one a row took there (samples or beams sharing a parent); else the free one
        sharing the longest prefix (undo, a branch), or a fresh one."""
        for at in (ids, ids[:-1]):
            if free.get(at):
                return at, free[at].pop()
            if at in taken:
                return at, taken[at].deep_copy()
        candidates = [(consumed, m) for consumed, matchers in free.items() for m in matchers]
        if not candidates:
            return (), self._fresh()[1]
        consumed, matcher = max(candidates, key=lambda entry: _common_prefix(entry[0], ids))
        free[consumed].remove(matcher)
        return consumed, matcher


def _cannot_go_on(constraint: Constraint, generated: int, matcher: Any) -> BadInput:
    return BadInput(
        f"the {constraint.kind.replace('_', ' ')} constraint cannot go on after {generated} tokens: "
        f"{one_line(matcher.get_error())}. Simplify it (the grammar engine's limits keep every step fast)"
    )


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = min(len(a), len(b))
    for index in range(length):
        if a[index] != b[index]:
            return index
    return length


@dataclass(frozen=True)
class ConstraintStage(Stage):
    """The sampler stage of a `Constraint`: tokens the grammar forbids after each row's generated ids get
    -inf. Built by `GenerationConfig.chain(decoder)`; not a registered stage (its setting is a whole grammar)."""

    constraint: Constraint
    matchers: MatcherPool = field(compare=False, repr=False)
    name: ClassVar[str] = "constraint"
    warper: ClassVar[bool] = False  # applies to greedy decoding too
    position: ClassVar[int] = -1  # before every registered stage

    @classmethod
    def build(cls, constraint: Constraint, tokenizer: Tokenizer, stop_ids: Collection[int], vocab_size: int):
        return cls(constraint, MatcherPool(constraint, grammar_tokenizer(tokenizer, stop_ids, vocab_size)))

    def allowed(self, history: History) -> torch.Tensor:
        """(B, V) bool: the tokens each row's grammar allows next."""
        rows = history.generated.tolist()
        matchers = self.matchers.align(rows)
        vocab_size = self.matchers.vocab_size
        # llguidance writes each row's mask into our buffer (what its `llguidance.torch` helpers do, without
        # importing them: they import torch.compile's machinery, seconds on first use)
        bitmask = torch.full((len(rows), (vocab_size + 31) // 32), -1, dtype=torch.int32)  # (B, words)
        for index, matcher in enumerate(matchers):
            row = bitmask[index]
            matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())
            if matcher.is_error():  # the engine's own limits (a pattern too big to build), or no sentence at all
                raise _cannot_go_on(self.constraint, len(rows[index]), matcher)
        # bit j of word w says whether token 32 * w + j is allowed (llguidance's layout, least significant first)
        bits = np.unpackbits(bitmask.numpy().view(np.uint8), axis=1, bitorder="little")  # (B, 32 * words)
        return torch.from_numpy(bits[:, :vocab_size]).bool()

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        allowed = self.allowed(history).to(logits.device)  # (B, V_grammar)
        if allowed.shape[1] != logits.shape[1]:
            raise BadInput(
                f"the constraint's vocabulary has {allowed.shape[1]} tokens and the model's logits {logits.shape[1]}"
            )
        return logits.masked_fill(~allowed, FILTERED)

    ends_outputs: ClassVar[bool] = True

    def complete(self, generated: list[int]) -> bool:
        """Whether nothing may follow `generated` but the end (the output is whole)."""
        (matcher,) = self.matchers.align([generated], all_rows=False)
        return bool(matcher.is_stopped())


def check_constraint_allows(chain: Any, history: History, token: int, tokenizer: Tokenizer) -> None:
    """Forcing a token the chain's constraint forbids here is one clear error (the output could not match)."""
    for stage in chain.stages:
        if isinstance(stage, ConstraintStage) and not bool(stage.allowed(history)[0, token]):
            piece = tokenizer.token_bytes(token).decode("utf-8", errors="replace")
            raise BadInput(
                f"token {token} ({piece!r}) is forbidden here by the {stage.constraint.kind.replace('_', ' ')} "
                "constraint: append a token it allows, or configure the session without the constraint"
            )
