"""Training a tiny GPT: the loss goes down, checkpoints save and load exactly, resume and Ctrl-C continue where
they stopped, bad corpora are one clear error, and the `decodelab tiny` commands work end to end."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import decodelab
from decodelab.cli import main
from decodelab.errors import BadInput
from decodelab.tinygpt import TinyGPT, TinyGPTConfig, TrainConfig, load_model, read_corpus, train
from decodelab.tinygpt.checkpoint import recover_interrupted_save, write_atomically
from decodelab.tinygpt.corpus import DEFAULT_CORPUS, Corpus, character_count, default_corpus_text
from decodelab.tinygpt.progress import ProgressBar
from decodelab.tinygpt.training import evaluate

SHAPE = TinyGPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32)
QUICK = TrainConfig(steps=12, batch_size=8, eval_interval=6, eval_windows=8, warmup_steps=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "pydoc.txt"
    path.write_text(default_corpus_text()[:30_000], encoding="utf-8")
    return path


def test_a_few_dozen_steps_lower_the_loss(corpus, tmp_path):
    torch.manual_seed(QUICK.seed)
    untrained = evaluate(TinyGPT(SHAPE), read_corpus(corpus).split(SHAPE.block_size)[1], 8)[0]  # the same start
    result = train(
        tmp_path / "run", corpus, SHAPE, QUICK, steps=40, learning_rate=3e-3, eval_interval=15, progress=False
    )
    assert not result.interrupted and result.step == 40
    assert untrained > 5.0  # about ln 256 = 5.55 nats: a uniform guess over the bytes
    assert result.val_loss < untrained - 1.5
    first, last = [loss for _, loss in result.train_losses[:5]], [loss for _, loss in result.train_losses[-5:]]
    assert sum(last) < sum(first) - 5 * 1.5
    assert [row[0] for row in result.val_losses] == [15, 30, 40]
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the curve beside the weights


def test_resume_continues_exactly_where_it_stopped(corpus, tmp_path):
    straight = train(tmp_path / "straight", corpus, SHAPE, QUICK, progress=False)
    half = train(tmp_path / "halves", corpus, SHAPE, QUICK, steps=6, lr_decay_steps=12, progress=False)  # same schedule
    assert half.step == 6
    rest = train(tmp_path / "halves", resume=True, steps=12, progress=False)
    assert rest.step == 12
    assert rest.train_losses == straight.train_losses  # same batches (RNG state), same optimizer moments
    assert rest.val_losses == straight.val_losses
    for name, tensor in load_model(tmp_path / "straight").state_dict().items():
        assert torch.equal(tensor, load_model(tmp_path / "halves").state_dict()[name]), name
    state = json.loads((tmp_path / "halves" / "training.json").read_text())
    assert state["step"] == 12 and state["corpus"] == str(corpus)


def test_learning_rate_warms_up_then_decays_on_a_cosine():
    from decodelab.tinygpt.training import learning_rate_at

    config = TrainConfig(steps=1000, learning_rate=1e-3, min_learning_rate=1e-4, warmup_steps=100)
    rates = [learning_rate_at(step, config) for step in (1, 50, 100, 550, 1000)]
    assert rates == pytest.approx([1e-5, 5e-4, 1e-3, 5.5e-4, 1e-4])
    assert learning_rate_at(600, config.with_(steps=600, lr_decay_steps=1000)) == learning_rate_at(600, config)


def test_ctrl_c_finishes_the_step_saves_and_resume_goes_on(corpus, tmp_path):
    def press_ctrl_c(step: int, loss: float) -> None:
        if step == 5:
            signal.raise_signal(signal.SIGINT)

    stopped = train(tmp_path / "run", corpus, SHAPE, QUICK, progress=False, on_step=press_ctrl_c)
    assert stopped.interrupted and stopped.step == 5
    assert json.loads((tmp_path / "run" / "training.json").read_text())["step"] == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    resumed = train(tmp_path / "run", resume=True, progress=False)
    straight = train(tmp_path / "straight", corpus, SHAPE, QUICK, progress=False)
    assert resumed.step == 12 and resumed.train_losses == straight.train_losses


def test_saved_checkpoint_loads_as_an_lm_with_the_trained_weights(corpus, tmp_path):
    train(tmp_path / "run", corpus, SHAPE, QUICK, progress=False)
    lm = decodelab.load(tmp_path / "run")
    ids = torch.tensor([list(b"def f(x):")])
    with torch.no_grad():
        assert torch.equal(lm.backend.forward(ids), load_model(tmp_path / "run")(ids))
    assert lm.model.config == SHAPE and lm.source == "tinygpt"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"  \n\n\t ", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "contains NUL bytes, so it is binary"),
        (b"caf\xe9 latin-1 text", r"is not UTF-8 text \(byte 0xE9 at offset 3\)"),
    ],
)
def test_bad_corpus_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInput, match=message) as error:
        train(tmp_path / "out", path, SHAPE, QUICK, progress=False)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_a_corpus_too_short_for_the_block_says_how_long_it_must_be(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("A short text.\n" * 10)
    with pytest.raises(BadInput, match="too few for blocks of 32 .* give at least 321 bytes or a smaller --block-size"):
        train(tmp_path / "out", path, SHAPE, QUICK, progress=False)
    for block_size, needed in ((32, 321), (128, 1281)):  # the least that works: one byte less does not
        assert [len(part) for part in Corpus("c", "x" * needed).split(block_size)] == [
            needed - block_size - 1,
            block_size + 1,
        ]
        with pytest.raises(BadInput, match=f"has {needed - 1} bytes, too few .* give at least {needed} bytes"):
            Corpus("c", "x" * (needed - 1)).split(block_size)


def test_the_default_corpus_is_pydoc_text():
    corpus = read_corpus(None)
    assert corpus.name == DEFAULT_CORPUS and len(corpus.text) > 100_000
    assert 'The "if" statement' in corpus.text or "if_stmt" in corpus.text
    assert character_count(torch.tensor(list("한국 ok".encode()))) == 5  # bytes starting a character


def test_out_must_be_new_or_a_checkpoint(corpus, tmp_path):
    train(tmp_path / "run", corpus, SHAPE, QUICK, steps=2, progress=False)
    with pytest.raises(
        BadInput, match="already holds a tiny-GPT checkpoint: pass --resume to continue it, --overwrite"
    ):
        train(tmp_path / "run", corpus, SHAPE, QUICK, progress=False)
    assert train(tmp_path / "run", corpus, SHAPE, QUICK, steps=3, overwrite=True, progress=False).step == 3
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(BadInput, match="exists and is not empty"):
        train(tmp_path / "notes", corpus, SHAPE, QUICK, progress=False)
    with pytest.raises(BadInput, match="nothing to resume"):
        train(tmp_path / "notes", resume=True, progress=False)
    with pytest.raises(BadInput, match="already at step 3: pass --steps above it"):
        train(tmp_path / "run", resume=True, steps=3, progress=False)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"


def test_a_failed_save_leaves_the_previous_checkpoint(corpus, tmp_path):
    target = tmp_path / "run"
    train(target, corpus, SHAPE, QUICK, steps=2, progress=False)
    before = (target / "model.safetensors").read_bytes()

    def fail(directory: Path) -> None:
        (directory / "model.safetensors").write_bytes(b"half written")
        raise OSError("disk full")

    with pytest.raises(BadInput, match=f"cannot write the checkpoint directory {str(target)!r} \\(disk full\\)"):
        write_atomically(target, fail)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no partial directory left behind
    target.rename(tmp_path / ".run.previous")  # as if a save died between its two renames
    recover_interrupted_save(target)
    assert (target / "model.safetensors").read_bytes() == before


def test_progress_bar_redraws_on_a_terminal_and_prints_lines_otherwise():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        bar = ProgressBar(100, stream=stream)
        for step in range(1, 101):
            bar.update(step, 2.5, 1234.0, 10.0)
        bar.note("step 100: validation loss 2.4")
        bar.close()
    assert "\r[" in terminal.getvalue() and "step 100/100  loss 2.500  1,234 tok/s" in terminal.getvalue()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and 10 <= len(lines) <= 25 and lines[-1] == "step 100: validation loss 2.4"


def test_cli_train_generate_next_and_inspect(corpus, tmp_path, capsys):
    out = tmp_path / "cli-run"
    shape = ["--layers", "1", "--heads", "2", "--dim", "16", "--block-size", "16", "--batch-size", "4"]
    assert (
        main(
            [
                "tiny",
                "train",
                "--corpus",
                str(corpus),
                "--out",
                str(out),
                "--steps",
                "6",
                "--eval-interval",
                "3",
                *shape,
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "step 6: validation loss" in captured.out and "nats/char" in captured.out
    assert "tok/s" in captured.err
    assert main(["tiny", "train", "--out", str(out), "--resume", "--steps", "8"]) == 0
    assert json.loads((out / "training.json").read_text())["step"] == 8
    assert main(["tiny", "train", "--out", str(out), "--resume", "--steps", "9", "--layers", "2"]) == 1
    assert "leave out --layers" in capsys.readouterr().err

    assert (
        main(["tiny", "generate", "--checkpoint", str(out), "Hello", "--greedy", "--max-new-tokens", "5", "--json"])
        == 0
    )
    final = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert len(final["token_ids"]) == 5
    assert main(["next", "Hello", "--model", str(out), "--top", "3"]) == 0
    assert "rank" in capsys.readouterr().out

    assert main(["tiny", "inspect", "--checkpoint", str(out), "Hello", "--out", str(tmp_path / "pictures")]) == 0
    assert sorted(path.name for path in (tmp_path / "pictures").iterdir()) == [
        "attention-layer-0.png",
        "embeddings.png",
    ]


def test_cli_bad_corpus_is_one_line(tmp_path, capsys):
    assert main(["tiny", "train", "--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("decodelab: error: corpus file") and "missing.txt" in error


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_saves_and_exits_130(corpus, tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "decodelab",
        "tiny",
        "train",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--steps",
        "100000",
        "--layers",
        "1",
        "--dim",
        "16",
        "--heads",
        "2",
        "--block-size",
        "16",
        "--batch-size",
        "4",
        "--eval-interval",
        "100000",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stderr:
        if line.startswith("training "):  # the header: Ctrl-C now stops after a step and saves
            break
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=60)[1]
    assert process.returncode == 130
    last = rest.strip().splitlines()[-1]
    assert last.startswith("decodelab: interrupted at step ") and "continue with --resume" in last
    step = int(last.split("step ")[1].split(":")[0])
    assert json.loads((out / "training.json").read_text())["step"] == step > 0


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_a_bad_out_fails_before_training_in_one_line(corpus, tmp_path, capsys, where):
    (tmp_path / "x.txt").write_text("a file")
    out = tmp_path / "x.txt" / "sub" if where == "under a file" else tmp_path / "x.txt"
    steps = []
    with pytest.raises(BadInput, match=str(out)):
        train(out, corpus, SHAPE, QUICK, progress=False, on_step=lambda step, loss: steps.append(step))
    assert steps == []  # no training was spent on it
    assert main(["tiny", "train", "--corpus", str(corpus), "--out", str(out), "--steps", "2", "--layers", "1"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("decodelab: error:") and str(out) in error


def test_inspect_into_a_file_is_one_line(tmp_path, capsys):
    from decodelab.tinygpt import save_model

    checkpoint = save_model(TinyGPT(SHAPE), tmp_path / "tiny")
    (tmp_path / "x.txt").write_text("a file")
    assert main(["tiny", "inspect", "--checkpoint", str(checkpoint), "ab", "--out", str(tmp_path / "x.txt")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{str(tmp_path / 'x.txt')!r} is a file: give a directory" in error
    assert (
        main(["tiny", "inspect", "--checkpoint", str(checkpoint), "ab", "--out", str(tmp_path / "x.txt" / "sub")]) == 1
    )
    assert f"cannot write the pictures into {str(tmp_path / 'x.txt' / 'sub')!r}" in capsys.readouterr().err


def test_resume_raising_steps_is_a_warm_restart_unless_lr_decay_steps_keeps_the_schedule(corpus, tmp_path, capsys):
    from decodelab.tinygpt.training import learning_rate_at

    for name in ("stretched", "kept"):
        train(tmp_path / name, corpus, SHAPE, QUICK, steps=6, progress=False)  # the cosine ends at step 6
    assert main(["tiny", "train", "--out", str(tmp_path / "stretched"), "--resume", "--steps", "12"]) == 0
    note = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert note == [
        f"note: the learning-rate cosine now ends at step 12, not 6, so step 7 runs at "
        f"{learning_rate_at(7, QUICK):.3g} instead of {QUICK.min_learning_rate:.3g} (a warm restart): "
        "pass --lr-decay-steps 6 to keep the old schedule"
    ]
    assert (
        main(["tiny", "train", "--out", str(tmp_path / "kept"), "--resume", "--steps", "12", "--lr-decay-steps", "6"])
        == 0
    )
    assert "note:" not in capsys.readouterr().err
    for name, last_rate in (("stretched", learning_rate_at(12, QUICK)), ("kept", QUICK.min_learning_rate)):
        state = json.loads((tmp_path / name / "training.json").read_text())
        assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(last_rate)  # the rate of step 12
    assert state["config"]["lr_decay_steps"] == 6


def test_a_relative_corpus_resumes_from_another_directory(corpus, tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "c.txt").write_text(corpus.read_text())
    monkeypatch.chdir(tmp_path / "data")
    train(tmp_path / "run", "c.txt", SHAPE, QUICK, steps=2, progress=False)
    state = json.loads((tmp_path / "run" / "training.json").read_text())
    assert state["corpus"] == str(tmp_path / "data" / "c.txt")
    monkeypatch.chdir(tmp_path)
    assert train(tmp_path / "run", resume=True, steps=3, progress=False).step == 3
    (tmp_path / "data" / "c.txt").rename(tmp_path / "moved.txt")
    assert main(["tiny", "train", "--out", str(tmp_path / "run"), "--resume", "--steps", "4"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "c.txt" in error and "from its training.json" in error and "built-in" not in error
    assert (
        main(["tiny", "train", "--out", str(tmp_path / "run"), "--resume", "--steps", "4", "--corpus", "moved.txt"])
        == 0
    )


def test_bench_uniform_baseline_is_ln_256_per_byte_so_more_per_character(monkeypatch):
    import importlib.util
    import math

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # the bench sets it if unset; leave the environment as it was
    spec = importlib.util.spec_from_file_location(
        "bench_tinygpt", Path(__file__).parent.parent / "bench" / "tinygpt.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.uniform_nats_per_char(torch.tensor(list(b"abcd"))) == pytest.approx(math.log(256))
    assert bench.uniform_nats_per_char(torch.tensor(list("한국".encode()))) == pytest.approx(3 * math.log(256))
