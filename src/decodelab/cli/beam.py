"""`decodelab beam PROMPT`: the best beam-search sequences with their scores, `--tree` the search, `--json` all."""

from __future__ import annotations

import argparse

from decodelab.beam import PENALTIES
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
from decodelab.samplers import settings_by_name

EARLY_STOPPING: dict[str, bool | str] = {"true": True, "false": False, "never": "never"}


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("beam", help="beam search: the best sequences, their scores and the search tree")
    parser.add_argument("prompt", metavar="PROMPT", help="prompt text ('-' reads standard input)")
    add_model_option(parser)
    add_chat_options(parser)
    group = parser.add_argument_group("beam search")
    group.add_argument("--beams", type=int, default=4, metavar="N", help="live beams per step, >= 2 (4)")
    group.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N")
    group.add_argument(
        "--length-penalty",
        type=float,
        default=1.0,
        metavar="X",
        help="score = sum logprob / length ** X; > 0 favours longer sequences (1.0)",
    )
    group.add_argument(
        "--early-stopping",
        choices=tuple(EARLY_STOPPING),
        default="false",
        help="true: stop once N hypotheses are finished; false: when none can improve (estimated "
        "at the current length); never: the same, estimated at --max-new-tokens (false)",
    )
    group.add_argument(
        "--num-return-sequences",
        type=positive_int,
        default=1,
        metavar="N",
        help="best sequences to print, <= --beams (1)",
    )
    add_sampler_flags(group, [settings_by_name()[name] for name in PENALTIES])
    add_constraint_options(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--tree", action="store_true", help="print the search tree after the sequences")
    add_json_option(output)
    parser.add_argument(
        "--max-children", type=positive_int, default=4, metavar="N", help="children shown per node with --tree (4)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from decodelab.beam import beam_search

    lm = load_model(args)
    chat = args.chat or args.system is not None
    prompt_ids = lm.prompt_ids(read_text(args.prompt), chat=chat, system=args.system)
    result = beam_search(
        lm,
        prompt_ids,
        num_beams=args.beams,
        max_new_tokens=args.max_new_tokens,
        length_penalty=args.length_penalty,
        early_stopping=EARLY_STOPPING[args.early_stopping],
        num_return_sequences=args.num_return_sequences,
        constraint=args.constraint,
        **sampler_options(args, lm.tokenizer),
    )
    if args.json:
        print_json({**model_fields(lm), **result.to_dict()})
        return 0
    print_fast_mode_note(lm)
    if args.constraint is not None:
        print(f"constraint: {args.constraint.describe()}")
    for rank, hypothesis in enumerate(result.sequences, start=1):
        print(
            f"--- #{rank}  score {hypothesis.score:.4f}  (sum logprob {hypothesis.sum_logprob:.3f}, "
            f"{len(hypothesis.token_ids)} tokens, {hypothesis.finished_by})"
        )
        print(hypothesis.text)
    if args.tree:
        print()
        print(result.tree.render(max_children=args.max_children))
    return 0
