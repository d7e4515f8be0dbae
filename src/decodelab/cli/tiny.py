"""`decodelab tiny train|generate|inspect`: train a tiny GPT on a text file, sample it, look inside it.

A trained checkpoint directory is also a model for every other command: `decodelab next "..." --model DIR`.
"""

from __future__ import annotations

import argparse

from decodelab.cli.options import add_compute_options, add_json_option, positive_int, read_text

SHAPE_OPTIONS = {"layers": "n_layer", "heads": "n_head", "dim": "n_embd", "block_size": "block_size"}
TRAINING_OPTIONS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "lr_decay_steps": "lr_decay_steps",
    "seed": "seed",
    "eval_interval": "eval_interval",
}


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "tiny", help="a tiny GPT from scratch: train it on a text file, sample it, look inside"
    )
    tiny = parser.add_subparsers(dest="tiny_command", metavar="COMMAND", parser_class=type(parser))
    tiny.required = True
    _add_train(tiny)
    _add_generate(tiny)
    _add_inspect(tiny)


def _add_train(tiny: argparse._SubParsersAction) -> None:
    from decodelab.tinygpt.config import TinyGPTConfig, TrainConfig

    model, training = TinyGPTConfig(), TrainConfig()
    parser = tiny.add_parser("train", help="train a tiny GPT on a UTF-8 text file (default: Python's pydoc text)")
    parser.add_argument(
        "--corpus",
        default=None,
        metavar="FILE",
        help="UTF-8 text to learn (default: the pydoc_data topics every Python install has)",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="checkpoint directory (also a --model for every command)"
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue the checkpoint in --out up to --steps")
    start.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a checkpoint")
    group = parser.add_argument_group("training (on --resume, the checkpoint's values unless given)")
    group.add_argument("--steps", type=positive_int, default=None, metavar="N", help=f"total steps ({training.steps})")
    group.add_argument(
        "--batch-size", type=positive_int, default=None, metavar="B", help=f"windows per step ({training.batch_size})"
    )
    group.add_argument(
        "--lr", type=float, default=None, metavar="LR", help=f"peak learning rate ({training.learning_rate})"
    )
    group.add_argument(
        "--lr-decay-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="step where the cosine learning-rate decay ends (--steps); without it, a resume that "
        "raises --steps stretches the cosine, so the learning rate rises again (a warm restart)",
    )
    group.add_argument("--seed", type=int, default=None, help=f"weights, batch order and dropout ({training.seed})")
    group.add_argument(
        "--eval-interval",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"validate and save every N steps ({training.eval_interval})",
    )
    shape = parser.add_argument_group("model shape (new runs only)")
    shape.add_argument("--layers", type=positive_int, default=None, help=f"transformer blocks ({model.n_layer})")
    shape.add_argument("--heads", type=positive_int, default=None, help=f"attention heads ({model.n_head})")
    shape.add_argument("--dim", type=positive_int, default=None, help=f"embedding width ({model.n_embd})")
    shape.add_argument(
        "--block-size",
        type=positive_int,
        default=None,
        metavar="T",
        help=f"context length in bytes ({model.block_size})",
    )
    parser.set_defaults(run=run_train)


def _add_generate(tiny: argparse._SubParsersAction) -> None:
    from decodelab.cli.generate import add_generation_options
    from decodelab.cli.generate import run as run_generate

    parser = tiny.add_parser("generate", help="sample a trained tiny GPT with decodelab's engine (as `generate`)")
    parser.add_argument("prompt", metavar="PROMPT", help="prompt text ('-' reads standard input)")
    parser.add_argument(
        "--checkpoint", dest="model", required=True, metavar="DIR", help="a `tiny train` --out directory"
    )
    add_compute_options(parser.add_argument_group("model"))
    add_generation_options(parser)
    parser.add_argument("--n", type=positive_int, default=1, help="samples of the prompt, batched (seed + row)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--trace", action="store_true", help="print the step table: text so far and top choices")
    add_json_option(output)
    parser.set_defaults(run=run_generate, chat=False, system=None, backend="auto")


def _add_inspect(tiny: argparse._SubParsersAction) -> None:
    parser = tiny.add_parser("inspect", help="PNGs of a prompt inside a tiny GPT: embeddings, attention per layer/head")
    parser.add_argument("prompt", metavar="PROMPT", help="prompt text ('-' reads standard input)")
    parser.add_argument(
        "--checkpoint", dest="model", required=True, metavar="DIR", help="a `tiny train` --out directory"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the PNG files")
    parser.set_defaults(run=run_inspect)


def run_train(args: argparse.Namespace) -> int:
    import sys

    from decodelab.errors import BadInput
    from decodelab.tinygpt.config import TinyGPTConfig
    from decodelab.tinygpt.training import train

    shape = {
        field: getattr(args, option) for option, field in SHAPE_OPTIONS.items() if getattr(args, option) is not None
    }
    options = {
        field: getattr(args, option) for option, field in TRAINING_OPTIONS.items() if getattr(args, option) is not None
    }
    if args.resume and shape:
        flags = ", ".join(f"--{option.replace('_', '-')}" for option, field in SHAPE_OPTIONS.items() if field in shape)
        raise BadInput(f"a resumed run keeps the checkpoint's shape: leave out {flags}")
    model_config = None if args.resume else TinyGPTConfig(**shape)
    result = train(
        args.out, corpus=args.corpus, model_config=model_config, resume=args.resume, overwrite=args.overwrite, **options
    )
    if result.interrupted:
        print(
            f"decodelab: interrupted at step {result.step}: checkpoint saved in {result.directory} "
            f"(continue with --resume)",
            file=sys.stderr,
        )
        return 130
    print(
        f"step {result.step}: validation loss {result.val_nats_per_char:.4f} nats/char "
        f"({result.val_loss:.4f} nats/byte) in {result.seconds:.0f} s; checkpoint in {result.directory} "
        f"(loss curve: {result.directory / 'loss.png'})"
    )
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from decodelab.loading import load
    from decodelab.tinygpt.plots import write_inspection

    for path in write_inspection(load(args.model), read_text(args.prompt), args.out):
        print(path)
    return 0
