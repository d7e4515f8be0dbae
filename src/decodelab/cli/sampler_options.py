"""The CLI's sampler flags, one per setting each stage declares (`--top-p P`, `--ban TOKEN`, ...)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from decodelab.errors import BadInput
from decodelab.samplers import Setting, all_settings
from decodelab.tokenizer import Tokenizer


def flag(declared: Setting) -> str:
    return "--" + declared.name.replace("_", "-")


def add_sampler_flags(group: argparse._ArgumentGroup, settings: Iterable[Setting] | None = None) -> None:
    """One flag per setting (default: every stage's), in stage order; list-valued settings repeat
    (`--ban 13 --ban 42`)."""
    for declared in all_settings() if settings is None else settings:
        help_text = declared.help if declared.stage in declared.name else f"{declared.help} [{declared.stage}]"
        if declared.kind in ("float", "int"):
            group.add_argument(
                flag(declared),
                type=float if declared.kind == "float" else int,
                default=None,
                metavar=declared.metavar,
                help=help_text,
            )
        else:  # token_ids, token_bias, strings: repeatable
            group.add_argument(
                flag(declared),
                action="append",
                default=None,
                metavar=declared.metavar,
                help=help_text + " (repeatable)",
            )


def sampler_options(args: argparse.Namespace, tokenizer: Tokenizer) -> dict[str, Any]:
    """The settings given on the command line, as GenerationConfig fields (unset flags are left out)."""
    options: dict[str, Any] = {}
    for declared in all_settings():
        value = getattr(args, declared.name, None)
        if value is None:
            continue
        if declared.kind == "token_ids":
            value = tuple(_token_id(tokenizer, flag(declared), token) for token in value)
        elif declared.kind == "token_bias":
            value = dict(_token_bias(tokenizer, flag(declared), entry) for entry in value)
        elif declared.kind == "strings":
            value = tuple(value)
        options[declared.name] = value
    return options


def _token_id(tokenizer: Tokenizer, option: str, token: str) -> int:
    """A token id written in digits, or a text that is exactly one token."""
    if token.isdigit():
        return int(token)
    encoded = tokenizer.encode(token, add_special_tokens=False)
    if len(encoded) != 1:
        raise BadInput(f"{option} {token!r} is {len(encoded)} tokens, not one: give a token id or a single token")
    return encoded[0]


def _token_bias(tokenizer: Tokenizer, option: str, entry: str) -> tuple[int, float]:
    token, separator, bias = entry.rpartition("=")
    try:
        value = float(bias)
    except ValueError:
        value = None
    if not separator or not token or value is None:
        raise BadInput(f"{option} takes TOKEN=BIAS, e.g. {option} 50256=-100 or {option} ' the=2', got {entry!r}")
    return _token_id(tokenizer, option, token), value
