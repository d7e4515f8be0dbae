"""What a constraint costs per token, on the bundled model's 49,152-token vocabulary, in one run.

    python bench/constraints.py [--tokens 48] [--repeats 3]

1. The grammar engines' own cost on one JSON schema (nested objects, enums, an array, numbers): building the
   tokenizer view once, compiling the schema, and the allowed-token mask per token along the same output —
   llguidance (what decodelab uses) and outlines-core (for the choice), each at its installed version.
2. decodelab end to end: greedy generation under the schema against the same number of tokens unconstrained
   (stop tokens banned so both run the full length), as milliseconds per token and the ratio. Goal: the
   constrained run at most 15% slower.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import time

import torch

import decodelab
from decodelab.constraints import Constraint, grammar_tokenizer

SCHEMA = {  # a book record: nested object, enums, an array, an integer and a bounded number
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 24},
        "year": {"type": "integer", "minimum": 1450, "maximum": 2030},
        "rating": {"type": "number", "minimum": 0, "maximum": 5},
        "genre": {"enum": ["novel", "poetry", "history", "science"]},
        "author": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 24}, "living": {"type": "boolean"}},
            "required": ["name", "living"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 12}},
    },
    "required": ["title", "year", "rating", "genre", "author", "tags"],
    "additionalProperties": False,
}
PROMPT = "A book as JSON:"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def llguidance_costs(lm, path: list[int], view: float) -> dict:
    """Schema compile and mask ms per token along `path`; `view`: the tokenizer view's build time, measured first."""
    import llguidance
    import llguidance.torch

    tokenizer = grammar_tokenizer(lm.tokenizer, lm.stop_ids(), lm.decoder.backend.vocab_size)  # cached
    started = time.perf_counter()
    matcher = llguidance.LLMatcher(tokenizer, Constraint.json_schema(SCHEMA).grammar_text())
    compile_time = time.perf_counter() - started
    bitmask = llguidance.torch.allocate_token_bitmask(1, tokenizer.vocab_size)
    masks = []
    for token in path:
        started = time.perf_counter()
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
        masks.append(time.perf_counter() - started)
        matcher.consume_token(token)
    return {"view": view, "compile": compile_time, "mask": statistics.median(masks), "mask_max": max(masks)}


def outlines_costs(lm, path: list[int]) -> dict | str:
    """outlines-core on the same schema (as a regex over the same vocabulary), or why it could not run."""
    try:
        import outlines_core
        from outlines_core.json_schema import build_regex_from_schema
    except ImportError:
        return "not installed (pip install outlines-core to compare)"
    stop = min(lm.stop_ids())
    started = time.perf_counter()
    tokens: dict[bytes, list[int]] = {}
    for token_id in range(lm.tokenizer.vocab_size):
        if token_id != stop and not lm.tokenizer.is_special(token_id):
            tokens.setdefault(lm.tokenizer.token_bytes(token_id), []).append(token_id)
    try:
        vocabulary = outlines_core.Vocabulary(stop, tokens)
        view = time.perf_counter() - started
        started = time.perf_counter()
        index = outlines_core.Index(build_regex_from_schema(json.dumps(SCHEMA)), vocabulary)
        compile_time = time.perf_counter() - started
        guide = outlines_core.Guide(index)
    except Exception as error:  # its own errors, of several types
        return f"failed: {error}"
    masks = []
    for token in path:
        started = time.perf_counter()
        guide.get_tokens()
        masks.append(time.perf_counter() - started)
        if token not in guide.get_tokens():
            break  # outlines' regex allows less whitespace or another number form: stop on the shared path
        guide.advance(token)
    return {"view": view, "compile": compile_time, "mask": statistics.median(masks), "mask_max": max(masks)}


def per_token(lm, tokens: int, repeats: int) -> tuple[float, float, list[int]]:
    """Best-of-`repeats` milliseconds per token unconstrained and under the schema, the two runs alternating (a
    noisy machine slows both alike), and the constrained output's tokens."""
    banned = {token_id: -100 for token_id in lm.stop_ids()}  # the unconstrained run goes the full length
    path = lm.generate(PROMPT, greedy=True, max_new_tokens=tokens, json_schema=SCHEMA).token_ids
    best = {"free": float("inf"), "constrained": float("inf")}
    for _ in range(repeats):
        for kind, options in (("free", {"logit_bias": banned}), ("constrained", {"json_schema": SCHEMA})):
            started = time.perf_counter()
            result = lm.generate(PROMPT, greedy=True, max_new_tokens=len(path), **options)
            assert len(result.token_ids) == len(path)
            best[kind] = min(best[kind], (time.perf_counter() - started) / len(path))
    return best["free"] * 1000, best["constrained"] * 1000, path


def stage_cost(lm, path: list[int]) -> float:
    """Median ms per token of decodelab's constraint stage alone along `path`: align the matcher, fill and
    unpack its mask, mask the logits, and ask whether the output is complete (what a step adds)."""
    from decodelab.generation_config import GenerationConfig
    from decodelab.samplers import History

    chain = GenerationConfig(greedy=True, constraint=Constraint.json_schema(SCHEMA)).chain(lm.decoder)
    stage = chain.stages[0]
    prompt = lm.prompt_ids(PROMPT)
    logits = torch.randn(1, lm.decoder.backend.vocab_size)
    times = []
    for index in range(len(path)):
        history = History(torch.tensor([prompt + path[:index]]), len(prompt))
        started = time.perf_counter()
        stage(logits, history)
        stage.complete(path[: index + 1])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=48, help="tokens per run (default 48)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement, best kept (default 5)")
    args = parser.parse_args()
    torch.manual_seed(0)
    lm = decodelab.load()
    started = time.perf_counter()
    grammar_tokenizer(lm.tokenizer, lm.stop_ids(), lm.decoder.backend.vocab_size)  # once per model, then cached
    view = time.perf_counter() - started
    lm.generate(PROMPT, greedy=True, max_new_tokens=4, json_schema=SCHEMA)  # warm-up

    free, constrained, path = per_token(lm, args.tokens, args.repeats)
    print(f"llguidance {version('llguidance')}, outlines-core {version('outlines-core')}, torch {torch.__version__}")
    print(f"vocabulary: {lm.decoder.backend.vocab_size} tokens; output under the schema: {len(path)} tokens")
    print()
    print(f"{'engine':<14}{'tokenizer view':>16}{'schema compile':>16}{'mask / token':>14}{'mask max':>10}")
    for name, costs in (("llguidance", llguidance_costs(lm, path, view)), ("outlines-core", outlines_costs(lm, path))):
        if isinstance(costs, str):
            print(f"{name:<14}{costs}")
            continue
        print(
            f"{name:<14}{costs['view'] * 1000:>13.0f} ms{costs['compile'] * 1000:>13.1f} ms"
            f"{costs['mask'] * 1000:>11.3f} ms{costs['mask_max'] * 1000:>7.1f} ms"
        )
    print("(outlines-core compiles the schema's regex against the whole vocabulary up front, then looks allowed")
    print(" tokens up per state; llguidance computes each mask as it goes, from a compile ~1000x cheaper)")
    print()
    cost = stage_cost(lm, path)
    print(f"the constraint stage alone: {cost:.2f} ms per token, {cost / free:.1%} of an unconstrained token")
    ratio = constrained / free
    print(
        f"decodelab greedy, {len(path)} tokens: unconstrained {free:.1f} ms/token, under the schema {constrained:.1f}"
    )
    print(f"constrained / unconstrained: {ratio:.3f}x (goal <= 1.15x): {'met' if ratio <= 1.15 else 'NOT met'}")


if __name__ == "__main__":
    main()
