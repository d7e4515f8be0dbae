"""`decodelab plot KIND PROMPT --out FILE`: write a plot as PNG or SVG (by the file's suffix).

decodelab plot next "The capital of France is" --out next.png --top 8
decodelab plot methods "The capital of France is" --out methods.png [--heatmap]
decodelab plot temperature "The capital of France is" --out temperature.svg
decodelab plot trace "Once upon a time" --out trace.png --top-p 0.9 --seed 1 --max-new-tokens 30
decodelab plot trace "A person as JSON:" --out trace.png --json-schema person.json --greedy
decodelab plot beam "The capital of France is" --beams 3 --max-new-tokens 6 --out beam.svg
"""

from __future__ import annotations

import argparse
import sys

from decodelab.cli.generate import add_generation_options, generation_options
from decodelab.cli.options import (
    add_chat_options,
    add_constraint_options,
    add_model_option,
    load_model,
    positive_int,
    print_fast_mode_note,
    read_text,
)


def positive_floats(text: str) -> tuple[float, ...]:
    """'0.5,1,2' -> (0.5, 1.0, 2.0); each must be a number > 0."""
    message = f"must be numbers > 0 separated by commas, such as 0.5,1,2; got {text!r}"
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not values or not all(value > 0 for value in values):  # `not nan > 0` too
        raise argparse.ArgumentTypeError(message)
    return values


def add_parser(commands: argparse._SubParsersAction) -> None:
    from decodelab.cli import OneLineErrorParser

    parser = commands.add_parser("plot", help="draw a plot (PNG or SVG): next, methods, temperature, trace, beam")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", parser_class=OneLineErrorParser)
    kinds.required = True

    next_ = _kind(kinds, "next", "bars of the most likely next tokens, the most likely highlighted")
    next_.add_argument("--top", type=positive_int, default=10, metavar="N", help="tokens to show (10)")

    methods = _kind(kinds, "methods", "greedy, temperature, top-k, top-p and min-p side by side at the first step")
    methods.add_argument(
        "--methods",
        default=None,
        metavar="LIST",
        help="';'-separated methods as for compare (default: 'greedy; temperature:0.8; top_k:5; top_p:0.9; min_p:0.1')",
    )
    methods.add_argument("--top", type=positive_int, default=10, metavar="N", help="tokens to show (10)")
    methods.add_argument("--seed", type=int, default=0, help="seed of the sampling methods' draws (0)")
    methods.add_argument("--heatmap", action="store_true", help="one heatmap (methods x tokens) instead of bars")

    temperature = _kind(kinds, "temperature", "how temperature reshapes the next-token distribution")
    temperature.add_argument(
        "--temperatures",
        type=positive_floats,
        default=(0.5, 1.0, 2.0),
        metavar="T,T,...",
        help="temperatures, one panel each (0.5,1,2)",
    )
    temperature.add_argument("--top", type=positive_int, default=10, metavar="N", help="tokens to show (10)")

    trace = _kind(
        kinds,
        "trace",
        "generate, then chart each chosen token's probability and the entropy per step (and, under a constraint, "
        "the probability it removed)",
    )
    add_generation_options(trace)

    beam = _kind(kinds, "beam", "beam search, then draw its tree: kept, finished and pruned candidates")
    beam.add_argument("--beams", "--num-beams", type=int, default=3, metavar="N", help="live beams per step (3)")
    beam.add_argument("--max-new-tokens", type=positive_int, default=6, metavar="N", help="(6)")
    beam.add_argument("--length-penalty", type=float, default=1.0, metavar="X")
    beam.add_argument("--num-return-sequences", type=positive_int, default=1, metavar="N")
    beam.add_argument("--hide-pruned", action="store_true", help="draw kept and finished candidates only")
    add_constraint_options(beam)


def _kind(kinds: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = kinds.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("prompt", metavar="PROMPT", help="prompt text ('-' reads standard input)")
    parser.add_argument("--out", "-o", required=True, metavar="FILE", help="where to write: a .png or .svg path")
    add_model_option(parser)
    add_chat_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from decodelab import plots
    from decodelab.plots.figures import check_path

    check_path(args.out)  # a bad suffix or folder fails before the model loads
    lm = load_model(args)
    prompt = read_text(args.prompt)
    chat = args.chat or args.system is not None
    if args.kind == "trace":
        result = lm.generate(prompt, chat=chat, system=args.system, **generation_options(args, lm))
        plots.plot_trace(result, path=args.out)
    elif args.kind == "beam":
        beams = lm.beam_search(
            prompt,
            chat=chat,
            system=args.system,
            num_beams=args.beams,
            max_new_tokens=args.max_new_tokens,
            length_penalty=args.length_penalty,
            num_return_sequences=args.num_return_sequences,
            constraint=args.constraint,
        )
        plots.plot_beam_tree(beams, show_pruned=not args.hide_pruned, path=args.out)
    else:
        dist = lm.next_token_distribution(prompt, chat=chat, system=args.system)
        if args.kind == "next":
            plots.plot_distribution(dist, top=args.top, path=args.out)
        elif args.kind == "temperature":
            plots.plot_temperatures(dist, args.temperatures, top=args.top, path=args.out)
        else:
            draw = plots.plot_methods_heatmap if args.heatmap else plots.plot_methods
            draw(dist, args.methods or plots.DEFAULT_METHODS, top=args.top, seed=args.seed, path=args.out)
    print(f"wrote {args.out}")
    print_fast_mode_note(lm, file=sys.stderr)  # a plot of a fast mode's numbers, not the exact path's
    return 0
