"""The options `decodelab score` and `decodelab compare` share for a JSONL file of inputs (--jsonl, --out,
--concurrency, --quiet), checked before the model loads, and the lines the run prints on standard error."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from decodelab.batch.jobs import DEFAULT_CONCURRENCY, workers_for
from decodelab.errors import BadInput

if TYPE_CHECKING:
    from decodelab.batch.runner import BatchSummary
    from decodelab.model import LM


def add_batch_options(parser: argparse.ArgumentParser, line: str, result: str) -> None:
    """The group, its help naming what one input `line` holds and what one `result` line is."""
    from decodelab.cli.options import positive_int

    group = parser.add_argument_group(
        "a JSONL file of inputs",
        f"each line {line}; each result is one line of OUT ({result}) with the input's id (its line number when "
        "it has none), written as it finishes. Rerunning with the same OUT resumes: inputs already there are "
        'skipped (a line with "error" counts as done; delete it to retry).',
    )
    group.add_argument("--jsonl", default=None, metavar="IN", help="the input file, instead of one text")
    group.add_argument("--out", default=None, metavar="OUT", help="the JSONL file results are appended to")
    group.add_argument(
        "--concurrency",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"inputs in flight at once on a model on a server ({DEFAULT_CONCURRENCY}); a model run here works on "
        "one at a time (each forward already uses every core, and a compiled decode step cannot be shared)",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary line")


def check_batch_args(args: argparse.Namespace, single: str, single_only: dict[str, object]) -> None:
    """One line, before the model loads, when the options mix one input (`single`, e.g. 'TEXT') and a file;
    `single_only`: flag -> its value, the flags that apply to one input only."""
    if args.jsonl is None:
        given = [flag for flag, value in {"--out": args.out, "--concurrency": args.concurrency}.items() if value]
        if given or args.quiet:
            raise BadInput(f"{given[0] if given else '--quiet'} applies with --jsonl IN: give an input file")
        if getattr(args, single.lower()) is None:
            raise BadInput(f"give {single}, or --jsonl IN --out OUT for a file of inputs")
        return
    if getattr(args, single.lower()) is not None:
        raise BadInput(f"give {single} or --jsonl IN, not both")
    if args.out is None:
        raise BadInput("--jsonl IN needs --out OUT: the JSONL file results are written to (a rerun resumes it)")
    for flag, value in single_only.items():
        if value:
            raise BadInput(f"{flag} applies to one {single}; with --jsonl each line gives its own, or drop it")


def announce_workers(lm: LM, args: argparse.Namespace) -> None:
    """Say so when --concurrency asked for more than a model run here does."""
    if not args.quiet and args.concurrency and args.concurrency > workers_for(lm, args.concurrency):
        print(
            f"decodelab: {lm.name} runs here: one input at a time (--concurrency {args.concurrency} is for a model "
            "on a server)",
            file=sys.stderr,
        )


def report(summary: BatchSummary, args: argparse.Namespace) -> None:
    if not args.quiet:
        print(f"decodelab: {summary.describe()}", file=sys.stderr)
