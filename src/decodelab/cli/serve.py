"""`decodelab serve`: the OpenAI-compatible server and the web explorer for one model."""

from __future__ import annotations

import argparse
import sys

from decodelab.cli.options import add_model_option, load_model, positive_int


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve", help="serve a model: OpenAI-compatible API, trace stream, and the web explorer at /"
    )
    add_model_option(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 and /api requests")
    parser.add_argument("--max-queue", type=positive_int, default=8,
                        help="generations admitted at once, running or waiting; more get 429 (default 8)")
    parser.set_defaults(run=run)


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {text!r}")
    return port


def run(args: argparse.Namespace) -> int:
    from decodelab.server import serve

    lm = load_model(args)
    print(f"decodelab: serving {lm.name} at http://{args.host}:{args.port}/ (OpenAI API under /v1)", file=sys.stderr)
    serve(lm, host=args.host, port=args.port, api_key=args.api_key, max_queue=args.max_queue)
    return 0
