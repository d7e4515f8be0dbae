"""`decodelab compare PROMPT --strategies "greedy; beam:5; top_p:0.9"`: strategies side by side, measured;
`decodelab compare --jsonl IN --out OUT [--concurrency N]`: every prompt of a file, results as JSON lines."""

from __future__ import annotations

import argparse

from decodelab.batch.cli_options import add_batch_options, announce_workers, check_batch_args, report
from decodelab.cli.options import (
    add_chat_options,
    add_constraint_options,
    add_json_option,
    add_model_option,
    load_model,
    model_fields,
    positive_int,
    print_fast_mode_note,
    print_json,
    read_text,
)
from decodelab.compare import DEFAULT_STRATEGIES, compare, parse_strategies


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("compare", help="run decoding strategies side by side and measure their outputs")
    parser.add_argument("prompt", metavar="PROMPT", nargs="?", help="prompt text ('-' reads standard input)")
    parser.add_argument(
        "--strategies",
        default=DEFAULT_STRATEGIES,
        metavar="LIST",
        help=f"';'-separated strategies, settings joined by ',' (default: {DEFAULT_STRATEGIES!r})",
    )
    parser.add_argument("--seed", type=int, default=0, help="one seed for every sampling strategy (0)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N")
    add_model_option(parser)
    add_chat_options(parser)
    add_constraint_options(parser)
    add_json_option(parser)
    add_batch_options(
        parser,
        line='is a JSON object {"prompt": ..., "id": ...} ("id" optional); the other options apply to every line',
        result="what --json prints for that prompt",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from decodelab.batch.jobs import comparison_record

    check_batch_args(args, "PROMPT", {"--json": args.json})
    strategies = parse_strategies(args.strategies)  # before loading: a typo fails in an instant
    if args.jsonl is not None:
        return run_file(args)
    lm = load_model(args)
    ids = lm.prompt_ids(read_text(args.prompt), chat=args.chat or args.system is not None, system=args.system)
    outcomes = compare(
        lm, ids, strategies, seed=args.seed, max_new_tokens=args.max_new_tokens, constraint=args.constraint
    )
    if args.json:
        print_json({**model_fields(lm), **comparison_record(ids, args.seed, outcomes)})
    else:
        print_fast_mode_note(lm)
        print(outcomes.table())
    return 0


def run_file(args: argparse.Namespace) -> int:
    from decodelab.batch.jobs import compare_items, compare_jsonl

    items = compare_items(args.jsonl)  # the whole file checked before the model loads
    lm = load_model(args)
    announce_workers(lm, args)
    summary = compare_jsonl(
        lm,
        items,
        args.out,
        strategies=args.strategies,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        chat=args.chat,
        system=args.system,
        constraint=args.constraint,
        concurrency=args.concurrency,
        quiet=args.quiet,
    )
    report(summary, args)
    return 0
