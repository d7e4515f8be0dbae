"""`decodelab tokens TEXT`: the id/token table, or the chat view with --chat."""

from __future__ import annotations

import argparse
import re
import sys

from decodelab.cli.options import (
    add_chat_options,
    add_json_option,
    add_model_option,
    load_model,
    model_fields,
    print_json,
    read_text,
)

HIGHLIGHT, RESET = "\033[1;35m", "\033[0m"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("tokens", help="show how a text is split into tokens")
    parser.add_argument("text", metavar="TEXT", help="text to tokenize ('-' reads standard input)")
    add_model_option(parser)
    add_chat_options(parser)
    parser.add_argument("--stop", action="append", default=[], metavar="STRING", help="extra stop string (repeatable)")
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    lm = load_model(args)
    text = read_text(args.text)
    chat = args.chat or args.system is not None
    view = lm.chat_tokens(text, args.system) if chat else lm.tokenize(text)
    stop_ids = sorted(lm.stop_ids(args.stop))
    if args.json:
        result = {**model_fields(lm), **view.to_dict()}
        if chat:
            result["stop_ids"] = stop_ids
            result["stop_strings"] = args.stop
        print_json(result)
        return 0
    if chat:
        print("rendered prompt:")
        print(highlight_specials(view.text, [t.piece for t in view if t.special], sys.stdout.isatty()))
        print()
    print(view.table())
    print(f"{len(view)} tokens; * marks special tokens")
    if chat:
        stops = ", ".join(f"{lm.tokenizer.id_to_token(i)} ({i})" for i in stop_ids)
        strings = "".join(f", {s!r}" for s in args.stop)
        print(f"generation stops on: {stops}{strings}")
    return 0


def highlight_specials(text: str, specials: list[str], color: bool) -> str:
    """Special tokens in colour on a terminal, in ⟦brackets⟧ elsewhere."""
    if not specials:
        return text
    pattern = re.compile("|".join(re.escape(s) for s in sorted(set(specials), key=len, reverse=True)))
    if color:
        return pattern.sub(lambda m: f"{HIGHLIGHT}{m.group(0)}{RESET}", text)
    return pattern.sub(lambda m: f"⟦{m.group(0)}⟧", text)
