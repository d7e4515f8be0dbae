"""`decodelab next PROMPT`: the most likely next tokens with their probabilities and the entropy."""

from __future__ import annotations

import argparse

from decodelab.cli.options import (
    add_chat_options,
    add_json_option,
    add_model_option,
    load_model,
    model_fields,
    positive_int,
    print_fast_mode_note,
    print_json,
    read_text,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("next", help="show the next-token distribution after a prompt")
    parser.add_argument("prompt", metavar="PROMPT", help="prompt text ('-' reads standard input)")
    parser.add_argument("--top", type=positive_int, default=10, metavar="N", help="how many tokens to list (10)")
    add_model_option(parser)
    add_chat_options(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    lm = load_model(args)
    prompt = read_text(args.prompt)
    distribution = lm.next_token_distribution(prompt, chat=args.chat or args.system is not None, system=args.system)
    if args.json:
        print_json({**model_fields(lm), **distribution.to_dict(args.top)})
    else:
        print_fast_mode_note(lm)
        print(distribution.table(args.top))
    return 0
