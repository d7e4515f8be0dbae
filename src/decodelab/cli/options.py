"""Options several subcommands share, and the helpers that read them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from decodelab.constraints import Constraint
from decodelab.errors import BadInput

if TYPE_CHECKING:
    from decodelab.model import LM


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_option(parser: argparse.ArgumentParser, api_key_flag: str = "--api-key") -> None:
    """--model, --backend and the compute mode: what every command that loads a model passes to `load()`.
    `api_key_flag` names the remote server's key flag (`serve` has its own --api-key: its clients' key)."""
    from decodelab.loading import backend_names

    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        "-m",
        default=None,
        help="hub id, model directory, .gguf file, or http://HOST:PORT/v1 for a model another server runs "
        "(vLLM, llama.cpp's server, decodelab serve) (default: the bundled SmolLM2-135M-Instruct)",
    )
    group.add_argument(
        "--served-model",
        default=None,
        metavar="NAME",
        help="with --model http://...: the model to use when the server serves several",
    )
    group.add_argument(
        api_key_flag,
        dest="remote_api_key",
        default=None,
        metavar="KEY",
        help="with --model http://...: that server's API key (default: $DECODELAB_API_KEY)",
    )
    parser.set_defaults(remote_api_key_flag=api_key_flag)
    group.add_argument(
        "--tokenizer",
        default=None,
        metavar="NAME",
        help="with --model http://...: the served model's tokenizer, as a model directory, .gguf file, 'bundled' "
        "or hub id (default: decodelab serve hands out its own; others: the served model's id as a hub id)",
    )
    group.add_argument(
        "--top-logprobs",
        type=positive_int,
        default=None,
        metavar="K",
        help="with --model http://...: alternatives asked per position (20; vLLM's default cap)",
    )
    group.add_argument(
        "--backend",
        choices=backend_names(),
        default="auto",
        help="what runs the model: auto picks native for Llama-family conversions (the bundled model, .gguf "
        "files), the tiny GPT for its checkpoints, transformers for the rest (auto)",
    )
    add_compute_options(group)


def add_compute_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--dtype, --quantize, --compile: the fast modes (the float32 default is the exact path)."""
    from decodelab.backends.quantized import QUANTIZATIONS
    from decodelab.loading import DTYPES

    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="float32",
        help="weights' and activations' dtype; anything but float32 is a fast mode, not the exact path (float32)",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default="none",
        help="hold the projection weights as int8 (per channel) or int4 (groups of 32): a fast mode, native "
        "backend only (none)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the one-token decode step: a warm-up of tens of seconds (printed) at load; native "
        "backend only",
    )


def add_chat_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chat", action="store_true", help="render TEXT as a user message via the chat template")
    parser.add_argument("--system", default=None, help="system message for --chat")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def read_text(text: str) -> str:
    """The TEXT argument, or standard input when it is '-'."""
    return sys.stdin.read() if text == "-" else text


def load_model(args: argparse.Namespace) -> LM:
    """The model the options name, in the mode they ask for; a compiled one says what the warm-up cost."""
    from decodelab.errors import BadInput
    from decodelab.loading import load
    from decodelab.remote.loading import is_remote

    remote: dict[str, Any] = {  # commands with their own --model (tiny generate) have none of these
        "model": getattr(args, "served_model", None),
        "api_key": getattr(args, "remote_api_key", None),
        "tokenizer": getattr(args, "tokenizer", None),
        "top_logprobs": getattr(args, "top_logprobs", None),
    }
    if not is_remote(args.model) and (given := [name for name, value in remote.items() if value is not None]):
        flags = {"model": "--served-model", "api_key": args.remote_api_key_flag, "tokenizer": "--tokenizer"}
        flag = flags.get(given[0], "--top-logprobs")
        raise BadInput(f"{flag} applies to a model on a server: give --model http://HOST:PORT/v1")
    options = remote if is_remote(args.model) else {}
    lm = load(
        args.model,
        dtype=args.dtype,
        backend=args.backend,
        quantize=args.quantize,
        compile=args.compile,
        **options,
    )
    if lm.compile_seconds is not None:
        print(
            f"decodelab: compiled the decode step in {lm.compile_seconds:.1f} s ({lm.mode.label}); later steps in "
            "this process reuse it",
            file=sys.stderr,
        )
    return lm


def model_fields(lm: LM) -> dict:
    """What every JSON output says about the model: its name and how it computes (`ComputeMode.to_dict()`)."""
    return {"model": lm.name, "mode": lm.mode.to_dict()}


def fast_mode_note(lm: LM) -> str | None:
    """One line naming a fast mode, for the head of a table or trace; None on the exact path (nothing to say)."""
    mode = lm.mode
    return None if mode.exact else f"mode: {mode.label} (fast mode: not the exact path)"


def print_fast_mode_note(lm: LM, file: IO[str] | None = None) -> None:
    """The note on `file` (standard output by default) when `lm` runs a fast mode; nothing on the exact path."""
    note = fast_mode_note(lm)
    if note is not None:
        print(note, file=file or sys.stdout)


def print_json(value: dict) -> None:
    print(json.dumps(value, ensure_ascii=False))


# --- constraints: --json-schema, --json-object, --regex, --choice, --grammar (one at a time) ----------------------


def _file_text(path: str, what: str, hint: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"no such {what} file: {path!r}; {hint}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{what} file {path!r} is not UTF-8 text; save it as UTF-8") from None
    except OSError as error:  # a directory, no permission, a name too long
        raise BadInput(f"cannot read {what} file {path!r}: {error.strerror or error}") from None


def _from_file(path: str, what: str, build: Callable[[str], Constraint], hint: str | None = None) -> Constraint:
    """The constraint `build` makes of file `path`'s text; its errors name the file."""
    text = _file_text(path, what, hint or "give the path of an existing file")
    try:
        return build(text)
    except BadInput as error:
        raise BadInput(f"{path}: {error}") from None


def json_schema_constraint(text: str) -> Constraint:
    """--json-schema: the schema itself as JSON text when it starts with '{', else the path of a .json file."""
    if text.lstrip().startswith("{"):
        return Constraint.json_schema(text)
    hint = """give a .json file's path, or the schema itself: '{"type": "object"}'"""
    return _from_file(text, "JSON schema", Constraint.json_schema, hint)


def choice_constraint(text: str) -> Constraint:
    """--choice: options split at each comma, spaces kept (' yes, no' is ' yes' and ' no'); or a JSON list of
    strings, for options that hold a comma ('[" yes, please", " no"]')."""
    if text.lstrip().startswith("["):
        try:
            options = json.loads(text)
        except ValueError as error:
            raise BadInput(
                f'{text!r} starts like a JSON list but is not JSON ({error}): write e.g. \'[" yes", " no"]\''
            ) from None
    else:
        options = text.split(",")
        if not all(options):
            raise BadInput(f"{text!r} has an empty option: separate non-empty options with single commas")
    return Constraint.choice(options)


def grammar_constraint(path: str) -> Constraint:
    """--grammar: a Lark (llguidance's: 'start: ...') or GBNF (llama.cpp's: 'root ::= ...') grammar file."""
    return _from_file(path, "grammar", Constraint.grammar)


# flag -> (metavar, how its value becomes a Constraint, help); each sets `args.constraint`; no metavar: no value
CONSTRAINT_FLAGS: dict[str, tuple[str | None, Callable[[str], Constraint], str]] = {
    "--json-schema": (
        "FILE|JSON",
        json_schema_constraint,
        "output is JSON valid under this schema: a .json file, or the schema as JSON text",
    ),
    "--json-object": (None, lambda _: Constraint.json_object(), "output is any JSON object"),
    "--regex": ("PATTERN", Constraint.regex, "output matches this regular expression whole (Rust regex syntax)"),
    "--choice": (
        "A,B,...",
        choice_constraint,
        "output is one of these options, split at each comma with spaces kept (' yes, no' is ' yes' or ' no'), "
        """or a JSON list of strings ('[" yes, please", " no"]')""",
    ),
    "--grammar": (
        "FILE",
        grammar_constraint,
        "output is a sentence of this grammar file: Lark ('start: ...') or GBNF ('root ::= ...')",
    ),
}


def add_constraint_options(parser: argparse.ArgumentParser) -> None:
    """The constraint flags, one at a time (decodelab.constraints); a bad file, schema or pattern fails while
    the arguments are read, before the model loads."""
    group = parser.add_argument_group("constraint (one at a time)")
    exclusive = group.add_mutually_exclusive_group()
    for name, (metavar, read, help_text) in CONSTRAINT_FLAGS.items():
        if metavar is None:
            exclusive.add_argument(name, dest="constraint", action=_Flag, nargs=0, const=read, help=help_text)
        else:
            exclusive.add_argument(name, dest="constraint", type=_argument_type(read), metavar=metavar, help=help_text)


class _Flag(argparse.Action):
    """A flag without a value whose constraint is built when given (not when the parser is)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, self.const(""))


def _argument_type(read: Callable[[str], Constraint]) -> Callable[[str], Constraint]:
    """`read`, with its BadInput as argparse's error (one line: 'argument --regex: ...')."""

    def parse(text: str) -> Constraint:
        try:
            return read(text)
        except BadInput as error:
            raise argparse.ArgumentTypeError(" ".join(str(error).split())) from None

    parse.__name__ = read.__name__  # argparse names the type in some messages
    return parse


def constraint_option(args: argparse.Namespace) -> Constraint | None:
    """The constraint the flags gave, or None."""
    return getattr(args, "constraint", None)
