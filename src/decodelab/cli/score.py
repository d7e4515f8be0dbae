"""`decodelab score TEXT [--prompt P]`: how likely the model finds each token of a text, and its perplexity;
`decodelab score --jsonl IN --out OUT [--concurrency N]`: every line of a file, results as JSON lines."""

from __future__ import annotations

import argparse

from decodelab.batch.cli_options import add_batch_options, announce_workers, check_batch_args, report
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
    parser.add_argument("text", metavar="TEXT", nargs="?", help="text to score ('-' reads standard input)")
    parser.add_argument(
        "--prompt", default=None, metavar="P", help="context the text continues; only the text's tokens are scored"
    )
    add_model_option(parser)
    add_json_option(parser)
    add_batch_options(
        parser,
        line='is a JSON object {"text": ..., "prompt": ..., "id": ...} ("prompt" and "id" optional)',
        result="what --json prints for that text",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_batch_args(args, "TEXT", {"--prompt": args.prompt, "--json": args.json})
    if args.jsonl is not None:
        return run_file(args)
    from decodelab.scoring import score_text

    lm = load_model(args)
    score = score_text(lm, read_text(args.text), prompt=args.prompt)
    if args.json:
        print_json({**model_fields(lm), **score.to_dict()})
    else:
        print_fast_mode_note(lm)
        print(score.table())
    return 0


def run_file(args: argparse.Namespace) -> int:
    from decodelab.batch.jobs import score_items, score_jsonl

    items = score_items(args.jsonl)  # the whole file checked before the model loads
    lm = load_model(args)
    announce_workers(lm, args)
    report(score_jsonl(lm, items, args.out, concurrency=args.concurrency, quiet=args.quiet), args)
    return 0
