"""The `decodelab` command: one module per subcommand, one place that turns errors into one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from decodelab.errors import DecodelabError

SUBCOMMANDS = (
    "tokens",
    "next",
    "generate",
    "beam",
    "score",
    "compare",
    "models",
    "serve",
    "plot",
    "tiny",
)  # each is decodelab.cli.<name> with add_parser() and run()


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with where to get help) instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    parser = OneLineErrorParser(prog="decodelab", description="See and steer how a language model writes.")
    parser.add_argument("--version", action="version", version=f"decodelab {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    commands.required = True
    for name in SUBCOMMANDS:
        import_module(f"decodelab.cli.{name.replace('-', '_')}").add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _ensure_utf8_output()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except DecodelabError as error:
        print(f"decodelab: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("decodelab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `decodelab tokens ... | head`
        return 0


def _ensure_utf8_output() -> None:
    """Korean and emoji must print even where the locale says ASCII (CI, minimal containers)."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(encoding="utf-8")


def _version() -> str:
    from decodelab import __version__

    return __version__
