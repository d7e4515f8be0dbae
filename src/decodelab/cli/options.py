"""Options several subcommands share, and the helpers that read them."""

from __future__ import annotations

import argparse
import json
import sys


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help="hub id, model directory or .gguf file (default: the bundled SmolLM2-135M-Instruct)",
    )


def add_chat_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chat", action="store_true", help="render TEXT as a user message via the chat template")
    parser.add_argument("--system", default=None, help="system message for --chat")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def read_text(text: str) -> str:
    """The TEXT argument, or standard input when it is '-'."""
    return sys.stdin.read() if text == "-" else text


def load_model(args: argparse.Namespace):
    from decodelab.loading import load

    return load(args.model)


def print_json(value: dict) -> None:
    print(json.dumps(value, ensure_ascii=False))
