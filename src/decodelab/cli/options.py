"""Options several subcommands share, and the helpers that read them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from decodelab.model import LM


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """--model, --backend and the compute mode: what every command that loads a model passes to `load()`."""
    from decodelab.loading import backend_names

    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        "-m",
        default=None,
        help="hub id, model directory or .gguf file (default: the bundled SmolLM2-135M-Instruct)",
    )
    group.add_argument(
        "--backend",
        choices=backend_names(),
        default="auto",
        help="what runs the model: auto picks native for Llama-family conversions (the bundled model, .gguf "
        "files), the tiny GPT for its checkpoints, transformers for the rest (auto)",
    )
    add_compute_options(group)


def add_compute_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--dtype, --quantize, --compile: the fast modes (the float32 default is the exact path)."""
    from decodelab.backends.quantized import QUANTIZATIONS
    from decodelab.loading import DTYPES

    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="float32",
        help="weights' and activations' dtype; anything but float32 is a fast mode, not the exact path (float32)",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default="none",
        help="hold the projection weights as int8 (per channel) or int4 (groups of 32): a fast mode, native "
        "backend only (none)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the one-token decode step: a warm-up of tens of seconds (printed) at load; native "
        "backend only",
    )


def add_chat_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chat", action="store_true", help="render TEXT as a user message via the chat template")
    parser.add_argument("--system", default=None, help="system message for --chat")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def read_text(text: str) -> str:
    """The TEXT argument, or standard input when it is '-'."""
    return sys.stdin.read() if text == "-" else text


def load_model(args: argparse.Namespace) -> LM:
    """The model the options name, in the mode they ask for; a compiled one says what the warm-up cost."""
    from decodelab.loading import load

    lm = load(args.model, dtype=args.dtype, backend=args.backend, quantize=args.quantize, compile=args.compile)
    if lm.compile_seconds is not None:
        print(
            f"decodelab: compiled the decode step in {lm.compile_seconds:.1f} s ({lm.mode.label}); later steps in "
            "this process reuse it",
            file=sys.stderr,
        )
    return lm


def model_fields(lm: LM) -> dict:
    """What every JSON output says about the model: its name and how it computes (`ComputeMode.to_dict()`)."""
    return {"model": lm.name, "mode": lm.mode.to_dict()}


def fast_mode_note(lm: LM) -> str | None:
    """One line naming a fast mode, for the head of a table or trace; None on the exact path (nothing to say)."""
    mode = lm.mode
    return None if mode.exact else f"mode: {mode.label} (fast mode: not the exact path)"


def print_fast_mode_note(lm: LM, file: IO[str] | None = None) -> None:
    """The note on `file` (standard output by default) when `lm` runs a fast mode; nothing on the exact path."""
    note = fast_mode_note(lm)
    if note is not None:
        print(note, file=file or sys.stdout)


def print_json(value: dict) -> None:
    print(json.dumps(value, ensure_ascii=False))
