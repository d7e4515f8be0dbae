"""DRY (`decodelab.samplers.stages.dry`): llama.cpp's test-sampling cases, hand-computed tables, the Z-algorithm
against the naive definition, breaker texts -> head tokens, the stage's place in the chain, and its messages."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decodelab.compare import parse_strategies
from decodelab.errors import BadInput, Unsupported
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import DEFAULT_ORDER, History
from decodelab.samplers.stages.dry import (
    Dry,
    cached_sequence_breakers,
    dry_penalized,
    longest_repeats,
    restart_limit,
    sequence_breakers,
    tail_length,
    z_function,
)

DECODELAB = Path(sys.executable).with_name("decodelab")


LETTERS = tuple("abcdefghij")  # token i's text is one letter, so matching text is matching tokens


def token_breakers(*breakers: list[int]) -> dict[int, tuple[str, ...]]:
    """Breakers written as llama.cpp's tests write them, [head, *tail] token ids, as head -> rest over LETTERS."""
    found: dict[int, tuple[str, ...]] = {}
    for head, *tail in breakers:
        found[head] = (*found.get(head, ()), "".join(LETTERS[token] for token in tail))
    return found


def penalized(
    logits: list[float],
    context: list[int],
    *,
    multiplier: float = 0.8,
    base: float = 1.75,
    allowed: int = 2,
    last_n: int = -1,
    breakers: dict | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    ids = torch.tensor([context], dtype=torch.long).reshape(1, len(context))  # (1, T)
    return dry_penalized(
        torch.tensor([logits], dtype=dtype), ids, breakers or {}, LETTERS, multiplier, base, allowed, last_n
    )[0]


# --- 1. llama.cpp tests/test-sampling.cpp: test_dry(probs, context, expected, multiplier, base, allowed, last_n) --

LLAMA_CPP = [
    ([0.25] * 4, [0, 1], [0.25] * 4, 1.0, 1.1, 2, 4, []),
    ([0.25] * 4, [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 2, 6, [[3]]),  # token 3 would be penalized but breaks
    ([0.2] * 5, [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818], 2.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 2, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 4, 7, []),  # a repeat of 2 < allowed 4
]


@pytest.mark.parametrize("probs, context, expected, multiplier, base, allowed, last_n, breakers", LLAMA_CPP)
def test_llama_cpp_cases(probs, context, expected, multiplier, base, allowed, last_n, breakers):
    logits = [math.log(p) for p in probs]
    out = penalized(
        logits,
        context,
        multiplier=multiplier,
        base=base,
        allowed=allowed,
        last_n=last_n,
        breakers=token_breakers(*breakers),
        dtype=torch.float32,
    )
    torch.testing.assert_close(out.softmax(-1), torch.tensor(expected), rtol=0, atol=1e-5)  # llama.cpp's tolerance


# --- 2. hand-computed tables: multiplier 0.8, base 1.75 (penalty 0.8 * 1.75^(length - allowed)) -------------------

L6 = [0.0, 1.0, 0.5, 0.25, 2.0, -1.0]
A = [1, 2, 3, 4, 1, 2, 3]  # the suffix 1 2 3 occurred before, followed by 4
B = [1, 2, 0, 3, 4, 9, 1, 2, 0, 3, 4]  # 1 2 0 3 4 repeats; 0 plays "\n"
D = [1, 2, 5, 6, 3, 4, 7, 1, 2, 5, 6, 3, 4]  # 5 6 plays a two-token breaker such as "\n\n"
ABC = [1, 2, 3, 3, 2, 3, 4, 1, 2, 3]  # llama.cpp's comment: a b c c b c y a b c, repeat counts 0 0 3 1 0 2 0 0 0 0

HAND = [
    # name, logits, context, allowed, last_n, breakers, {token: new logit}
    ("A1 repeat of 3, allowed 2", L6, A, 2, -1, {}, {4: 2.0 - 1.4}),
    ("A2 allowed 3: base^0", L6, A, 3, -1, {}, {4: 2.0 - 0.8}),
    ("A3 allowed 4: 3 is too short", L6, A, 4, -1, {}, {}),
    ("A4 last_n 5: window 3 4 1 2 3", L6, A, 2, 5, {}, {}),
    ("A5 last_n 6: 2 3 clipped by the window", L6, A, 2, 6, {}, {4: 2.0 - 0.8}),
    ("B1 no breakers: 1 2 0 3 4", [0.0] * 10, B, 2, -1, {}, {9: -0.8 * 1.75**3}),
    ("B2 breaker 0: clamped to 3 4", [0.0] * 10, B, 2, -1, token_breakers([0]), {9: -0.8}),
    ("B3 breaker 0, allowed 3: 2 since it", [0.0] * 10, B, 3, -1, token_breakers([0]), {}),
    ("C1 the breaker itself is exempt", [0.0] * 5, [1, 2, 0, 1, 2], 2, -1, token_breakers([0]), {}),
    ("C2 without breakers it is not", [0.0] * 5, [1, 2, 0, 1, 2], 2, -1, {}, {0: -0.8}),
    ("D1 two-token breaker 5 6", [0.0] * 8, D, 2, -1, token_breakers([5, 6]), {7: -0.8}),
    ("D2 no breakers: 6 tokens", [0.0] * 8, D, 2, -1, {}, {7: -0.8 * 1.75**4}),
    (
        "D3 a head without its tail breaks nothing",
        [0.0] * 8,
        [1, 2, 5, 3, 4, 7, 1, 2, 5],
        2,
        -1,
        token_breakers([5, 6]),
        {3: -1.4},
    ),
    ("overlap 1 1 1 1", [0.0] * 3, [1, 1, 1, 1], 2, -1, {}, {1: -1.4}),
    ("llama.cpp comment, allowed 2", [0.0] * 5, ABC, 2, -1, {}, {3: -1.4, 4: -0.8}),
    ("llama.cpp comment, allowed 1", [0.0] * 5, ABC, 1, -1, {}, {2: -0.8, 3: -0.8 * 1.75**2, 4: -1.4}),
    ("window no longer than allowed", [0.0] * 3, [1, 1], 2, -1, {}, {}),
    ("newest token is a breaker", [0.0] * 3, [1, 2, 1, 2, 0], 1, -1, token_breakers([0]), {}),
]


@pytest.mark.parametrize("name, logits, context, allowed, last_n, breakers, changed", HAND, ids=[h[0] for h in HAND])
def test_hand_computed_logits(name, logits, context, allowed, last_n, breakers, changed):
    expected = torch.tensor([changed.get(token, logit) for token, logit in enumerate(logits)], dtype=torch.float64)
    out = penalized(logits, context, allowed=allowed, last_n=last_n, breakers=breakers)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


PROBS = [  # probabilities after the stage, from the same tables (softmax of the logits above)
    ("A1", L6, A, 2, {}, [0.113109, 0.307462, 0.186485, 0.145235, 0.206098, 0.041610]),
    ("A2", L6, A, 3, {}, [0.096721, 0.262915, 0.159466, 0.124192, 0.321125, 0.035582]),
    ("B2", [0.0] * 10, B, 2, token_breakers([0]), [0.105828] * 9 + [0.047551]),
    ("D1", [0.0] * 8, D, 2, token_breakers([5, 6]), [0.134240] * 7 + [0.060318]),
    ("overlap", [0.0] * 3, [1, 1, 1, 1], 2, {}, [0.445118, 0.109765, 0.445118]),
]


@pytest.mark.parametrize("name, logits, context, allowed, breakers, expected", PROBS, ids=[p[0] for p in PROBS])
def test_hand_computed_probabilities(name, logits, context, allowed, breakers, expected):
    out = penalized(logits, context, allowed=allowed, breakers=breakers)
    torch.testing.assert_close(out.softmax(-1), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-6)


def test_exponent_is_capped_so_the_penalty_stays_finite():
    """200 x token 1: a repeat of 199, exponent 197 capped at int(88.7228391 / ln 1.75) = 158."""
    out = penalized([0.0] * 3, [1] * 200, multiplier=1.0, dtype=torch.float32)
    assert math.isfinite(out[1]) and out[1] == torch.tensor(-(1.75**158), dtype=torch.float32)
    assert out[0] == 0 and out[2] == 0


def test_removed_tokens_stay_removed():
    out = penalized([0.0, -math.inf, 0.0], [1, 2, 1, 2, 1], allowed=1)  # 2 then 1 would extend repeats
    assert out[1] == -math.inf and out[2] < 0


def test_rows_are_penalized_independently():
    ids = torch.tensor([A, [5, 5, 5, 5, 5, 5, 5]])  # (2, 7)
    out = dry_penalized(torch.zeros(2, 6, dtype=torch.float64), ids, {}, LETTERS, 0.8, 1.75, 2, -1)
    torch.testing.assert_close(out[0], torch.tensor([0, 0, 0, 0, -1.4, 0], dtype=torch.float64))
    torch.testing.assert_close(out[1], torch.tensor([0, 0, 0, 0, 0, -0.8 * 1.75**4], dtype=torch.float64))


# --- 3. the Z-algorithm against the naive O(T^2) definition --------------------------------------------------------


def test_z_function_by_hand():
    assert z_function([1, 2, 1, 2, 1]) == [0, 0, 3, 0, 1]
    assert z_function(ABC[::-1]) == [0, 0, 0, 0, 2, 0, 1, 3, 0, 0]  # the repeat counts 0 0 3 1 0 2 0 0 0 0, reversed
    assert z_function([]) == [] and z_function([7]) == [0]


def naive_longest_repeats(window: list[int], breakers: list[list[int]], allowed: int) -> dict[int, int]:
    """Straight from the definition: for each earlier position j, how far window[..j] and the window share a
    suffix, clamped to the tokens since the last complete breaker; the token after j keeps the longest."""
    size = len(window)
    limit = size
    for start in range(size - 1, -1, -1):
        tails = [t for head, *t in breakers if head == window[start] and window[start + 1 : start + 1 + len(t)] == t]
        if tails:
            limit = size - 1 - start - max(len(t) for t in tails)
            break
    if size <= allowed or limit < allowed:
        return {}
    longest: dict[int, int] = {}
    for j in range(size - 1):
        length = 0
        while length <= j and window[j - length] == window[size - 1 - length]:
            length += 1
        length = min(length, limit)
        if length >= allowed:
            longest[window[j + 1]] = max(longest.get(window[j + 1], 0), length)
    return longest


def test_longest_repeats_match_the_naive_definition_on_random_contexts():
    rng = random.Random(0)
    for _ in range(3000):
        vocab = rng.randint(2, 5)
        window = [rng.randrange(vocab) for _ in range(rng.randint(0, 40))]
        breakers = [[rng.randrange(vocab) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(0, 2))]
        allowed = rng.randint(1, 4)
        got = longest_repeats(window, token_breakers(*breakers), LETTERS, allowed)
        assert got == naive_longest_repeats(window, breakers, allowed), (window, breakers, allowed)


def test_restart_limit_counts_tokens_after_the_last_complete_breaker():
    assert restart_limit(B, token_breakers([0]), LETTERS) == 2
    assert restart_limit(D, token_breakers([5, 6]), LETTERS) == 2
    assert restart_limit([1, 2, 5, 3, 4, 7, 1, 2, 5], token_breakers([5, 6]), LETTERS) == 9  # 5 never followed by 6
    assert restart_limit([1, 2, 3], {}, LETTERS) == 3


# --- 4. breaker texts -> token ids ------------------------------------------------------------------------------

AB = ["a", "b", "xa", "ab", "c", "x"]  # llama.cpp's overlap rule on breaker "ab"


def test_a_token_ending_with_a_breakers_start_is_a_head_with_the_rest_to_follow():
    """ "ab" breaks alone; "a" and "xa" break when "b" follows; "b" and "c" are no heads."""
    assert sequence_breakers(AB, ["ab"]) == {3: ("",), 0: ("b",), 2: ("b",)}


@pytest.mark.parametrize(
    "context, limit",
    [
        ([4, 2, 1, 4], 1),  # c xa b c: "xa" + "b" spell "ab", one token after it
        ([4, 0, 1, 4, 4], 2),  # c a b c c
        ([4, 0, 4, 4], 4),  # "a" followed by "c": no breaker
        ([4, 4, 0], 3),  # the head is the newest token: its rest has not come yet
        ([0, 1, 4, 3], 0),  # "ab" alone is the newest token
    ],
)
def test_a_head_breaks_when_the_next_tokens_spell_the_rest(context, limit):
    assert restart_limit(context, sequence_breakers(AB, ["ab"]), AB) == limit


def test_any_tokenization_of_the_rest_counts():
    r"""Breaker "\n\n" written as two "\n" tokens breaks, as llama.cpp's head "\n" + tail tokenize("\n") does."""
    vocabulary = ["\n", "\n\n", "a"]
    breakers = sequence_breakers(vocabulary, ["\n\n"])
    assert breakers == {0: ("\n",), 1: ("",)}
    assert restart_limit([2, 0, 0, 2, 2], breakers, vocabulary) == 2
    assert restart_limit([2, 0, 2, 0, 2], breakers, vocabulary) == 5


def test_a_tail_is_matched_for_at_most_20_tokens_as_llama_cpp_cuts_it():
    assert tail_length("a" * 25, [0] * 20, LETTERS) == 20
    assert tail_length("a" * 25, [0] * 19, LETTERS) == -1
    assert tail_length("ab", [0, 1, 2], LETTERS) == 2 and tail_length("ab", [0, 2], LETTERS) == -1
    assert tail_length("", [], LETTERS) == 0


def test_default_breakers_are_every_token_containing_one():
    vocabulary = ["\n", ".\n", "http:", ' "', "**", "a", "b", "\n\n", "*", "\ufffd"]
    breakers = sequence_breakers(vocabulary, Dry(0.8).dry_sequence_breakers)
    assert breakers == dict.fromkeys([0, 1, 2, 3, 4, 7, 8], ("",))
    assert cached_sequence_breakers(vocabulary, ("*",)) is cached_sequence_breakers(vocabulary, ("*",))


VOCAB = ("\n", "The", " cat", " sat", ".", " on", " a", " mat", " dog", " Then")


def test_stage_finds_breakers_in_the_historys_token_texts():
    """Example B in words: `The cat\\n sat. Then The cat\\n sat.` — the newline (token 0) cuts the repeat to
    ` sat.` (2 tokens), so ` Then` gets 0.8, not the 0.8 * 1.75^3 a 5-token repeat would."""
    history = History(torch.tensor([B]), prompt_length=3, vocabulary=VOCAB)  # ids (1, 11)
    out = Dry(0.8)(torch.zeros(1, 10), history)
    assert out[0, 9].item() == pytest.approx(-0.8) and (out[0, :9] == 0).all()
    without = Dry(0.8, dry_sequence_breakers=())(torch.zeros(1, 10), history)
    assert without[0, 9].item() == pytest.approx(-0.8 * 1.75**3)


def test_breaker_texts_without_token_texts_are_one_clear_error():
    history = History(torch.tensor([B]), prompt_length=3)
    with pytest.raises(Unsupported, match=r"no token texts .* pass dry_sequence_breakers=\[\]"):
        Dry(0.8)(torch.zeros(1, 10), history)
    out = Dry(0.8, dry_sequence_breakers=())(torch.zeros(1, 10), history)
    assert out[0, 9].item() == pytest.approx(-0.8 * 1.75**3)


# --- 5. the stage: purity, config, chain, messages, CLI and compare -------------------------------------------------


def test_stage_does_not_change_its_input():
    logits = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([B, B[::-1]])
    before, ids_before = logits.clone(), ids.clone()
    history = History(ids, prompt_length=3, vocabulary=VOCAB)
    out = Dry(0.8, dry_allowed_length=1)(logits, history)
    assert torch.equal(logits, before) and torch.equal(ids, ids_before)
    assert out.data_ptr() != logits.data_ptr() and not torch.equal(out, logits)


@pytest.mark.parametrize(
    "options, names",
    [
        ({"dry_multiplier": 0}, []),
        ({"dry_multiplier": 0.8}, ["dry"]),
        ({"dry_multiplier": 0.8, "dry_penalty_last_n": 0}, []),  # no window: llama.cpp builds no DRY either
        (
            {"dry_multiplier": 0.8, "no_repeat_ngram_size": 3, "temperature": 0.7},
            ["no_repeat_ngram", "dry", "temperature"],
        ),
        ({"dry_multiplier": 0.8, "temperature": 0.7, "greedy": True}, ["dry"]),  # a penalty: greedy keeps it
    ],
)
def test_config_chain(options, names):
    assert [stage.name for stage in GenerationConfig(**options).chain().stages] == names


def test_default_order_puts_dry_after_no_repeat_ngram():
    assert DEFAULT_ORDER.index("dry") == DEFAULT_ORDER.index("no_repeat_ngram") + 1
    assert DEFAULT_ORDER.index("dry") < DEFAULT_ORDER.index("temperature")
    config = GenerationConfig()
    assert (
        config.dry_multiplier,
        config.dry_base,
        config.dry_allowed_length,
        config.dry_penalty_last_n,
        config.dry_sequence_breakers,
    ) == (0.0, 1.75, 2, -1, ("\n", ":", '"', "*"))


def test_config_from_json_carries_the_breakers():
    config = GenerationConfig.from_dict({"dry_multiplier": 0.8, "dry_sequence_breakers": ["\n", "###"]})
    [stage] = config.chain().stages
    assert stage == Dry(0.8, dry_sequence_breakers=("\n", "###"))


BAD = [
    ({"dry_multiplier": -0.5}, "dry_multiplier must be a number >= 0 (0 turns it off), got -0.5"),
    ({"dry_base": 0.5}, "dry_base must be a number > 1, got 0.5"),
    ({"dry_base": 1}, "dry_base must be a number > 1, got 1"),
    ({"dry_allowed_length": 0}, "dry_allowed_length must be a whole number >= 1, got 0"),
    ({"dry_allowed_length": 1.5}, "dry_allowed_length must be a whole number >= 1, got 1.5"),
    (
        {"dry_penalty_last_n": -2},
        "dry_penalty_last_n must be a whole number of tokens >= 1, -1 (the whole context) or 0 (off), got -2",
    ),
    (
        {"dry_sequence_breakers": ("\n", "")},
        "dry_sequence_breakers must be a list of non-empty strings of at most 40 bytes (UTF-8) each, got ('\\n', '')",
    ),
    ({"dry_sequence_breakers": ("é" * 21,)}, "dry_sequence_breakers must be a list of non-empty strings"),
    ({"dry_sequence_breakers": "\n"}, "dry_sequence_breakers must be a list of non-empty strings"),
    ({"dry_sequence_breakers": (10,)}, "dry_sequence_breakers must be a list of non-empty strings"),
]


@pytest.mark.parametrize("values, message", BAD, ids=[message for _, message in BAD])
def test_bad_values_quote_the_value(values, message):
    with pytest.raises(BadInput) as from_config:
        GenerationConfig(**{"dry_multiplier": 0.8, **values})
    assert str(from_config.value).startswith(message)
    with pytest.raises(BadInput) as from_stage:
        Dry(**{"dry_multiplier": 0.8, **values})
    assert str(from_stage.value) == str(from_config.value)


def test_generate_help_lists_the_flags():
    shown = subprocess.run([str(DECODELAB), "generate", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in (
        "--dry-multiplier",
        "--dry-base",
        "--dry-allowed-length",
        "--dry-penalty-last-n",
        "--dry-sequence-breakers",
    ):
        assert flag in shown


def test_compare_words():
    [strategy] = parse_strategies("dry_multiplier:0.8")
    assert strategy.options == {"dry_multiplier": 0.8}
    [strategy] = parse_strategies("dry:0.8,dry_allowed_length:3")
    assert strategy.options == {"dry_multiplier": 0.8, "dry_allowed_length": 3}
    assert isinstance(strategy.options["dry_allowed_length"], int)


def test_dry_in_the_decode_loop_reads_the_vocabulary(bundled):
    """The loop hands the stage each token's text, so the default breakers work end to end."""
    prompt = "one two three four one two three four one two three"
    plain = bundled.generate(prompt, greedy=True, max_new_tokens=1)
    dry = bundled.generate(prompt, greedy=True, max_new_tokens=1, dry_multiplier=5.0)
    assert plain.steps[0].piece == " four"  # the model repeats the pattern
    assert dry.token_ids != plain.token_ids  # DRY penalizes the repeat (greedy keeps penalties)
    assert [report.name for report in dry.steps[0].stages] == ["dry"]
