"""`decodelab generate PROMPT`: stream text, or `--trace` the step table, or `--json` one object per step."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

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
from decodelab.cli.sampler_options import add_sampler_flags, sampler_options
from decodelab.constraints import ConstraintStage
from decodelab.records import overruled_note
from decodelab.tokens import visible

if TYPE_CHECKING:
    from decodelab.engine import Generation
    from decodelab.model import LM
    from decodelab.records import Step


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("generate", help="generate text with our own traced decoding loop")
    parser.add_argument("prompt", metavar="PROMPT", help="prompt text ('-' reads standard input)")
    add_model_option(parser)
    add_chat_options(parser)
    add_generation_options(parser)
    parser.add_argument("--n", type=positive_int, default=1, help="samples of the prompt, batched (seed + row)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--trace", action="store_true", help="print the step table: text so far and top choices")
    add_json_option(output)
    parser.set_defaults(run=run)


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N")
    group.add_argument("--greedy", action="store_true", help="always take the most likely token")
    add_sampler_flags(group)
    group.add_argument("--stop", action="append", default=[], metavar="STRING", help="stop string (repeatable)")
    group.add_argument("--max-time", type=float, default=None, metavar="SECONDS")
    group.add_argument("--seed", type=int, default=None)
    group.add_argument(
        "--samplers", default=None, metavar="ORDER", help="comma-separated stage order, e.g. top_k,temperature,top_p"
    )
    group.add_argument("--top-n", type=int, default=5, metavar="N", help="alternatives recorded per step (5)")
    add_constraint_options(parser)


def generation_options(args: argparse.Namespace, lm: LM) -> dict[str, Any]:
    return dict(
        max_new_tokens=args.max_new_tokens,
        greedy=args.greedy,
        stop=tuple(args.stop),
        max_time=args.max_time,
        seed=args.seed,
        top_n=args.top_n,
        samplers=tuple(s.strip() for s in args.samplers.split(",") if s.strip()) if args.samplers else None,
        constraint=args.constraint,
        **sampler_options(args, lm.tokenizer),
    )


def run(args: argparse.Namespace) -> int:
    lm = load_model(args)
    prompt = read_text(args.prompt)
    chat = args.chat or args.system is not None
    generation = lm.generation(prompt, chat=chat, system=args.system, n=args.n, **generation_options(args, lm))
    if args.json:
        for step in generation:
            print_json(step.to_dict())
        constraint = generation.config.constraint
        for row, result in enumerate(generation.results):
            print_json(
                {
                    "row": row,
                    **model_fields(lm),
                    "constraint": None if constraint is None else constraint.to_dict(),
                    **result.to_dict(),
                }
            )
    elif args.trace:
        print_trace(lm, generation, prompt if not chat else lm.chat_prompt(prompt, args.system))
    else:
        print_fast_mode_note(lm, file=sys.stderr)  # standard output is the text alone
        print_stream(generation)
    return 0


def print_stream(generation) -> None:
    from decodelab.engine import stream_text

    if generation.n == 1:
        for delta in stream_text(generation):
            sys.stdout.write(delta)
            sys.stdout.flush()
        print()
        print(f"[{generation.results[0].stop_reason}]", file=sys.stderr)
        return
    for row, result in enumerate(generation.run()):
        print(f"--- sample {row} (seed {result.seed}, {result.stop_reason})")
        print(result.text)


def print_trace(lm: LM, generation: Generation, prompt_text: str) -> None:
    """The tutorial's table: the input so far, then the five most likely choices with their %, and the token
    taken when it is not the model's top choice. Under a constraint, a line under each step says how many tokens
    it allowed and how much of the model's probability it removed, and whether it forbade the model's top choice.
    A fast mode heads the table (its probabilities are not the exact path's)."""
    print_fast_mode_note(lm)
    if generation.config.constraint is not None:
        print(f"constraint: {generation.config.constraint.describe()}")
    text = prompt_text
    for step in generation:
        row = f"[row {step.row}] " if generation.n > 1 else ""
        chosen = (
            f"  ⇒ {visible(step.piece)} (rank {step.rank}, {step.prob:.2%} after samplers)"
            if not generation.config.is_greedy or step.rank != 1
            else ""
        )
        print(f"{row}{step.index:>3}  {visible(text[-60:])} → {step.choices()}{chosen}")
        if notes := step_notes(step):
            print(f"{row}     {notes}")
        if step.row == 0:
            text += step.piece
    for row_index, result in enumerate(generation.results):
        print(f"row {row_index}: {result.stop_reason}; text: {result.text!r}")


def step_notes(step: Step) -> str:
    """What the constraint did at this step and whether a stage overruled the model's top choice ('' if neither):
    "constraint: 6 tokens allowed, 97.91% of the model's probability removed; model wanted '↵'; the constraint
    forbade it"."""
    notes = [
        f"constraint: {report.kept} token{'s' if report.kept != 1 else ''} allowed, "
        f"{report.removed_mass:.2%} of the model's probability removed"
        for report in step.stages
        if report.name == ConstraintStage.name
    ]
    if step.overruled_by is not None and step.raw_top:
        notes.append(overruled_note(step.overruled_by, step.raw_top[0].piece))
    return "; ".join(notes)
