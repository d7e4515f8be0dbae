"""Tiny-GPT checkpoints on disk: a save replaces only the checkpoint's own files, is fsync'd, survives being
killed at any moment (the next load or save finishes or discards it), and a damaged file is one clear error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import decodelab
from decodelab.cli import main
from decodelab.errors import BadInput, ModelNotFound
from decodelab.tinygpt import TinyGPT, TinyGPTConfig, TrainConfig, load_model, save_model, train
from decodelab.tinygpt.checkpoint import COMMITTED, write_atomically
from decodelab.tinygpt.corpus import default_corpus_text
from decodelab.tinygpt.plots import write_inspection

SHAPE = TinyGPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=32)
QUICK = TrainConfig(steps=2, batch_size=4, eval_interval=2, eval_windows=4, warmup_steps=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "pydoc.txt"
    path.write_text(default_corpus_text()[:5_000], encoding="utf-8")
    return path


def add_users_files(directory: Path) -> None:
    """What the reviewer did: pictures from `tiny inspect --out DIR/pictures` and a notes file."""
    write_inspection(decodelab.load(directory), "ab", directory / "pictures")
    (directory / "NOTES.md").write_text("notes\n")


def assert_users_files_kept(directory: Path) -> None:
    assert (directory / "NOTES.md").read_text() == "notes\n"
    assert sorted(path.name for path in (directory / "pictures").iterdir()) == [
        "attention-layer-0.png",
        "embeddings.png",
    ]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_model(directory).state_dict()


def same_weights(model: TinyGPT, directory: Path) -> bool:
    return all(torch.equal(tensor, weights(directory)[name]) for name, tensor in model.state_dict().items())


def test_resume_overwrite_and_save_model_keep_the_users_other_files(corpus, tmp_path):
    checkpoint = tmp_path / "CK"
    train(checkpoint, corpus, SHAPE, QUICK, progress=False)
    add_users_files(checkpoint)
    assert main(["tiny", "train", "--out", str(checkpoint), "--resume", "--steps", "4"]) == 0
    assert_users_files_kept(checkpoint)
    train(checkpoint, corpus, SHAPE, QUICK, overwrite=True, progress=False)
    assert_users_files_kept(checkpoint)
    model = TinyGPT(SHAPE)
    save_model(model, checkpoint)
    assert_users_files_kept(checkpoint)
    assert same_weights(model, checkpoint)
    assert not (checkpoint / "training.json").exists()  # the old run's state does not belong to these weights
    assert sorted(path.name for path in checkpoint.iterdir()) == [
        "NOTES.md",
        "config.json",
        "model.safetensors",
        "pictures",
        "tokenizer.json",
    ]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc (Linux)")
def test_every_saved_file_and_the_directory_are_fsynced(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os,
        "fsync",
        lambda descriptor: synced.append(os.readlink(f"/proc/self/fd/{descriptor}")) or real_fsync(descriptor),
    )
    target = save_model(TinyGPT(SHAPE), tmp_path / "CK")
    names = {Path(path).name for path in synced}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names  # each file, in the staging directory
    assert str(target) in synced  # and the directory whose entries were renamed


@pytest.mark.parametrize("first_save", [True, False])
def test_a_save_killed_after_its_commit_is_finished_by_the_next_load(tmp_path, monkeypatch, first_save):
    checkpoint = tmp_path / "CK"
    if not first_save:
        save_model(TinyGPT(SHAPE), checkpoint)
        add_users_files(checkpoint)
    new = TinyGPT(TinyGPTConfig(block_size=16, n_layer=2, n_head=1, n_embd=16))  # even another shape
    moved = []
    real_replace = os.replace

    def killed_after_one_file(source, destination):
        if moved:
            raise SystemExit("killed")  # not an OSError: nothing in the save may clean up after it
        moved.append(destination)
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", killed_after_one_file)
    with pytest.raises(SystemExit):
        save_model(new, checkpoint)
    monkeypatch.undo()
    assert (checkpoint / COMMITTED).is_dir()
    lm = decodelab.load(checkpoint)  # finishes the save
    assert lm.model.config == new.config and same_weights(new, checkpoint)
    assert not (checkpoint / COMMITTED).exists()
    if not first_save:
        assert_users_files_kept(checkpoint)


def test_a_save_killed_before_its_commit_leaves_the_old_checkpoint(corpus, tmp_path):
    checkpoint = tmp_path / "CK"
    train(checkpoint, corpus, SHAPE, QUICK, progress=False)
    add_users_files(checkpoint)
    before = weights(checkpoint)

    def killed_while_writing(staging: Path) -> None:
        (staging / "model.safetensors").write_bytes(b"half written")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(checkpoint, killed_while_writing)
    assert not [path.name for path in checkpoint.iterdir() if path.name.startswith(".")]  # cleaned up
    # a SIGKILL cleans nothing up: leftovers of killed saves, in this design and the old one beside the directory
    for stale in (checkpoint / ".saving-k1ll3d", tmp_path / ".CK.saving-k1ll3d"):
        stale.mkdir()
        (stale / "model.safetensors").write_bytes(b"half written")
    assert all(torch.equal(tensor, before[name]) for name, tensor in weights(checkpoint).items())
    assert train(checkpoint, resume=True, steps=4, progress=False).step == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["CK"]
    assert not [path.name for path in checkpoint.iterdir() if path.name.startswith(".")]
    assert_users_files_kept(checkpoint)


def test_a_failed_save_is_one_line_naming_the_directory(tmp_path):
    def disk_full(staging: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(BadInput, match=r"cannot write the checkpoint directory '.*CK' \(No space left on device\)"):
        write_atomically(tmp_path / "CK", disk_full)
    assert list((tmp_path / "CK").iterdir()) == []


def test_truncated_weights_are_one_clear_error(tmp_path, capsys):
    checkpoint = save_model(TinyGPT(SHAPE), tmp_path / "bad")
    weights_file = checkpoint / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:1000])  # head -c 1000
    with pytest.raises(ModelNotFound, match="model.safetensors' is damaged .*restore it from a backup or train again"):
        decodelab.load(checkpoint)
    assert main(["next", "ab", "--model", str(checkpoint)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(weights_file) in error


@pytest.mark.parametrize(
    ("name", "damage"), [("training.safetensors", b"\x00" * 40), ("training.json", b'{"step": 2,')]
)
def test_damaged_training_state_is_one_clear_error_on_resume(corpus, tmp_path, capsys, name, damage):
    checkpoint = tmp_path / "CK"
    train(checkpoint, corpus, SHAPE, QUICK, progress=False)
    (checkpoint / name).write_bytes(damage)
    assert main(["tiny", "train", "--out", str(checkpoint), "--resume", "--steps", "4"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "training state in" in error and "restore" in error and "--overwrite" in error
