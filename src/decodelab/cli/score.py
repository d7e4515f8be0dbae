"""`decodelab score TEXT [--prompt P]`: how likely the model finds each token of a text, and its perplexity."""

from __future__ import annotations

import argparse

from decodelab.cli.options import (
    add_json_option,
    add_model_option,
    load_model,
    model_fields,
    print_fast_mode_note,
    print_json,
    read_text,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("score", help="score a text token by token: logprob, rank, surprisal, perplexity")
    parser.add_argument("text", metavar="TEXT", help="text to score ('-' reads standard input)")
    parser.add_argument(
        "--prompt", default=None, metavar="P", help="context the text continues; only the text's tokens are scored"
    )
    add_model_option(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from decodelab.scoring import score_text

    lm = load_model(args)
    score = score_text(lm, read_text(args.text), prompt=args.prompt)
    if args.json:
        print_json({**model_fields(lm), **score.to_dict()})
    else:
        print_fast_mode_note(lm)
        print(score.table())
    return 0
