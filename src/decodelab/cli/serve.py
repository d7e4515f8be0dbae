"""`decodelab serve`: the OpenAI-compatible server and the web explorer for one model."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from decodelab.cli.options import add_model_option, load_model
from decodelab.remote import API_KEY_VARIABLE


def add_parser(commands: argparse._SubParsersAction) -> None:
    from decodelab.server.limits import ServerLimits

    parser = commands.add_parser(
        "serve", help="serve a model: OpenAI-compatible API, trace stream, and the web explorer at /"
    )
    add_model_option(parser, api_key_flag="--remote-api-key")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)",
    )
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on /v1 and /api requests (or set "
        f"{API_KEY_VARIABLE}, "
        "which other users cannot read from the process list)",
    )
    parser.add_argument(
        "--allowed-hosts",
        default="",
        metavar="NAMES",
        help="comma-separated Host names to answer to besides localhost and --host "
        "(e.g. a machine name the class uses; '*' for any)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages from ORIGIN call the API from a browser (repeatable; off by default)",
    )
    limits = parser.add_argument_group("limits (memory and time a request may take; GET /api/info lists them)")
    for limit in fields(ServerLimits):
        kind = type(limit.default)
        limits.add_argument(
            "--" + limit.name.replace("_", "-"),
            type=positive(kind),
            default=limit.default,
            metavar="N" if kind is int else "S",
            help=f"{limit.metadata['help']} (default {limit.default})",
        )
    parser.set_defaults(run=run)


def positive(kind: type) -> argparse._ActionType:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number > 0, got {text!r}")
        return value

    return parse


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
    from decodelab.server.limits import ServerLimits, describe_tokens, kv_bytes_per_token

    limits = {limit.name: getattr(args, limit.name) for limit in fields(ServerLimits)}
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_VARIABLE) or None
    lm = load_model(args)
    per_token = kv_bytes_per_token(lm.backend)
    mode = "" if lm.mode.exact else f" in a fast mode ({lm.mode.label}: not the exact path)"
    print(
        f"decodelab: serving {lm.name}{mode} at http://{args.host}:{args.port}/ (OpenAI API under /v1); up to "
        f"{limits['max_batch']} rows batched, {limits['max_queue']} requests waiting; KV budget "
        f"{describe_tokens(limits['max_batch_tokens'], per_token)} for requests, "
        f"{describe_tokens(limits['max_session_tokens'], per_token)} for sessions",
        file=sys.stderr,
    )
    if args.host in ("0.0.0.0", "::") and not args.allowed_hosts:
        print(
            "decodelab: other machines must reach this server by a name given to --allowed-hosts (its Host "
            "header is checked against DNS rebinding); add --api-key too",
            file=sys.stderr,
        )
    serve(
        lm,
        host=args.host,
        port=args.port,
        api_key=api_key,
        extra_hosts=[name for name in args.allowed_hosts.split(",") if name.strip()],
        cors_origins=args.cors_origin,
        **limits,
    )
    return 0
