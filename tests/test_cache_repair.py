"""The converted-model cache repairs itself: dead partial directories go, damaged conversions are redone.

Most tests convert a tiny random Llama GGUF (a 2-layer model with a 262-token byte-level vocabulary, written
here with the `gguf` package), which converts in a fraction of a second; one slow test does the real thing
on the bundled model. A killed conversion is a real process killed with SIGKILL, a live one a real process
holding the lock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
import torch

import decodelab
from decodelab.gguf_cache import (
    COMPLETE_MARKER,
    WHOLE_HASH_LIMIT,
    bundled_gguf_path,
    cache_damage,
    conversion_lock,
    conversion_stamp,
    converted_dir_for,
    ensure_converted,
    is_complete,
    remove_dead_partials,
    write_directory_atomically,
)

MiB = 1 << 20

# Runs one conversion in another process, under the lock as ensure_converted does, and either dies
# mid-way (SIGKILL, as `kill -9` or the OOM killer would) or holds the lock until told to go on.
CONVERSION_IN_ANOTHER_PROCESS = """
import os, signal, sys
from pathlib import Path
from decodelab.gguf_cache import conversion_lock, write_directory_atomically

target, then = Path(sys.argv[1]), sys.argv[2]

def fill(partial):
    (partial / "config.json").write_text("{}")
    (partial / "model.safetensors").write_bytes(bytes(1 << 20))  # weights written half-way
    if then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    print("converting", flush=True)
    sys.stdin.readline()
    return {"converted by": "the other process"}

with conversion_lock(target, progress=None):
    write_directory_atomically(target, fill)
"""


def conversion_in_another_process(target: Path, then: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CONVERSION_IN_ANOTHER_PROCESS, str(target), then],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def write_tiny_gguf(path: Path) -> None:
    """A random 2-layer Llama with GPT-2-style byte-level BPE over 256 bytes, 3 merges and SmolLM2's specials."""
    import numpy as np
    from gguf import GGUFWriter

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = iter(range(256, 512))  # GPT-2 maps the other bytes to code points from U+0100 on
    byte_chars = [chr(b) if b in printable else chr(next(others)) for b in range(256)]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *byte_chars, "Ġt", "he", "Ġthe"]
    writer = GGUFWriter(path, "llama")
    hidden, ffn, layers = 64, 128, 2
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(16)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * 3 + [1] * (len(tokens) - 3))  # 3 = control, 1 = normal
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    rng = np.random.default_rng(0)

    def add(name: str, *shape: int, ones: bool = False) -> None:
        values = np.ones(shape) if ones else rng.standard_normal(shape) * 0.02
        writer.add_tensor(name, values.astype(np.float32))

    add("token_embd.weight", len(tokens), hidden)
    add("output_norm.weight", hidden, ones=True)
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", hidden, ones=True)
        add(f"blk.{i}.ffn_norm.weight", hidden, ones=True)
        add(f"blk.{i}.attn_q.weight", hidden, hidden)
        add(f"blk.{i}.attn_k.weight", 32, hidden)
        add(f"blk.{i}.attn_v.weight", 32, hidden)
        add(f"blk.{i}.attn_output.weight", hidden, hidden)
        add(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        add(f"blk.{i}.ffn_up.weight", ffn, hidden)
        add(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path)
    return path


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    """An empty $DECODELAB_HOME; returns its models directory (created by the first conversion)."""
    monkeypatch.setenv("DECODELAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


@pytest.fixture
def converted(tiny_gguf, models) -> Path:
    return ensure_converted(tiny_gguf, progress=None)


def read_marker(directory: Path) -> dict:
    return json.loads((directory / COMPLETE_MARKER).read_text())


def write_marker(directory: Path, marker: dict) -> None:
    (directory / COMPLETE_MARKER).write_text(json.dumps(marker))


def test_a_killed_conversion_leaves_a_partial_that_the_next_load_removes(tiny_gguf, models, capfd):
    target = converted_dir_for(tiny_gguf)
    killed = conversion_in_another_process(target, then="die")
    assert killed.wait() == -signal.SIGKILL
    [partial] = models.glob(f".{target.name}.partial-*")  # what a killed run leaves: nothing else would remove it

    lm = decodelab.load(tiny_gguf)
    assert not partial.exists() and lm.path == target and is_complete(target)
    assert f"decodelab: removed {partial} (1 MB), left by a conversion that did not finish\n" in capfd.readouterr().err
    assert list(models.glob(".*.partial-*")) == []


def test_the_partial_of_a_live_conversion_is_kept(tiny_gguf, models, capfd):
    other = models / "other-model"
    live = conversion_in_another_process(other, then="wait")
    try:
        assert live.stdout.readline() == "converting\n"  # it holds the lock and is filling its partial
        [partial] = models.glob(".other-model.partial-*")
        decodelab.load(tiny_gguf)  # converts the tiny model, looking over every partial on the way
        assert partial.is_dir()
        assert "removed" not in capfd.readouterr().err
    finally:
        live.communicate("go on\n")
    assert live.returncode == 0 and read_marker(other)["converted by"] == "the other process"
    assert not partial.exists()


def test_a_second_process_waits_for_the_conversion_in_progress(tiny_gguf, models):
    target = converted_dir_for(tiny_gguf)
    first = conversion_in_another_process(target, then="wait")
    assert first.stdout.readline() == "converting\n"
    progress = StringIO()
    second = threading.Thread(target=lambda: ensure_converted(tiny_gguf, progress=progress))
    second.start()
    deadline = time.monotonic() + 120  # only a guard against hanging forever
    while "waiting" not in progress.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f"another process is converting into {target}; waiting for it" in progress.getvalue()
    first.communicate("go on\n")
    second.join()
    assert read_marker(target)["converted by"] == "the other process"  # kept: no second conversion
    assert "converting tiny.gguf" not in progress.getvalue()


@pytest.mark.parametrize("fresh", [True, False])
def test_a_partial_without_a_lock_file_keeps_the_old_one_hour_rule(tmp_path, fresh):
    """Partials from a decodelab that did not lock: only their age says they are dead."""
    partial = tmp_path / ".some-model.partial-abc123"
    partial.mkdir()
    if not fresh:
        two_hours_ago = time.time() - 7200
        os.utime(partial, (two_hours_ago, two_hours_ago))
    remove_dead_partials(tmp_path, progress=None)
    assert partial.exists() == fresh


def truncate_the_weights(directory: Path) -> str:
    weights = directory / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    return f"model.safetensors is {size // 2} bytes, expected {size}"


def record_another_size(directory: Path) -> str:
    marker = read_marker(directory)
    size = marker["files"]["config.json"]["size"]
    marker["files"]["config.json"]["size"] = size + 1
    write_marker(directory, marker)
    return f"config.json is {size} bytes, expected {size + 1}"


def change_bytes_but_not_the_size(directory: Path) -> str:
    tokenizer = directory / "tokenizer.json"
    text = tokenizer.read_text()
    tokenizer.write_text(text.replace('"Ġthe"', '"Ġtha"'))
    return "tokenizer.json does not match the hash recorded when it was written"


def remove_a_file(directory: Path) -> str:
    (directory / "tokenizer_config.json").unlink()
    return "tokenizer_config.json is missing"


def garble_the_marker(directory: Path) -> str:
    (directory / COMPLETE_MARKER).write_text('{"files": ')
    return f"its {COMPLETE_MARKER} cannot be read"


def name_a_file_outside(directory: Path) -> str:
    marker = read_marker(directory)
    marker["files"]["../../../etc/hostname"] = {"size": 1, "sha256": "0" * 64}
    write_marker(directory, marker)
    return f"its {COMPLETE_MARKER} cannot be read"


@pytest.mark.parametrize(
    "damage",
    [
        truncate_the_weights,
        record_another_size,
        change_bytes_but_not_the_size,
        remove_a_file,
        garble_the_marker,
        name_a_file_outside,
    ],
)
def test_a_damaged_conversion_is_converted_again_with_one_note(tiny_gguf, converted, capfd, damage):
    before = decodelab.load(tiny_gguf).next_token_distribution("the the").probs
    problem = damage(converted)
    capfd.readouterr()

    lm = decodelab.load(tiny_gguf)
    errors = capfd.readouterr().err
    assert f"decodelab: the cached model in {converted} is damaged ({problem}): converting it again\n" in errors
    assert "first use only" not in errors
    assert lm.path == converted and cache_damage(converted) is None
    torch.testing.assert_close(lm.next_token_distribution("the the").probs, before)


def test_a_marker_from_an_older_decodelab_loads_as_it_is(tiny_gguf, converted, capfd):
    """No file table to check: it was written after a complete conversion, and is not converted again."""
    marker = read_marker(converted)
    del marker["files"]
    write_marker(converted, marker)
    stamp = conversion_stamp(converted)
    capfd.readouterr()
    decodelab.load(tiny_gguf)
    assert conversion_stamp(converted) == stamp
    assert "decodelab:" not in capfd.readouterr().err


def test_an_older_conversion_that_fails_to_load_is_converted_again(tiny_gguf, converted, capfd):
    marker = read_marker(converted)
    del marker["files"]
    write_marker(converted, marker)
    truncate_the_weights(converted)
    capfd.readouterr()

    lm = decodelab.load(tiny_gguf)
    errors = capfd.readouterr().err
    assert (
        f"decodelab: the cached model in {converted} is damaged (loading it failed: Error while deserializing header"
        in errors
    )
    assert errors.count("converting it again") == 1
    assert lm.path == converted and "model.safetensors" in read_marker(converted)["files"]


def test_a_conversion_that_still_fails_to_load_gives_one_line(tiny_gguf, converted, monkeypatch):
    """A disk that returns garbage whatever is written: after one more conversion, the line with the remedy."""
    import safetensors.torch

    def unreadable(*args, **kwargs):
        raise safetensors.SafetensorError("Error while deserializing header: header too large")

    monkeypatch.setattr(safetensors.torch, "load_file", unreadable)
    stamp = conversion_stamp(converted)
    with pytest.raises(decodelab.DecodelabError) as raised:
        decodelab.load(tiny_gguf)
    assert str(raised.value) == (
        f"cannot load the cached model in {converted}, even converted again "
        "(Error while deserializing header: header too large): delete that directory and run again"
    )
    assert conversion_stamp(converted) != stamp  # it was converted again once


def test_large_files_are_checked_by_size_and_both_ends(tmp_path):
    target = tmp_path / "models" / "big"

    def fill(partial: Path) -> dict:
        (partial / "model.safetensors").write_bytes(os.urandom(WHOLE_HASH_LIMIT + 3 * MiB))
        return {}

    write_directory_atomically(target, fill)
    weights = target / "model.safetensors"
    assert set(read_marker(target)["files"]["model.safetensors"]) == {"size", "sha256_of_ends"}
    assert cache_damage(target) is None
    with weights.open("r+b") as handle:  # a torn tail of the same length
        handle.seek(-10, os.SEEK_END)
        handle.write(bytes(10))
    assert cache_damage(target) == "model.safetensors does not match the hash recorded when it was written"


def link_files(source: Path, partial: Path) -> dict:
    """Fill `partial` with hard links to `source`'s files (copies across file systems); return its metadata."""
    for file in source.iterdir():
        if file.name != COMPLETE_MARKER:
            try:
                os.link(file, partial / file.name)
            except OSError:
                shutil.copy2(file, partial / file.name)
    return {key: value for key, value in read_marker(source).items() if key != "files"}


@pytest.mark.slow
def test_truncated_bundled_weights_are_converted_again(bundled, tmp_path, monkeypatch, capfd):
    """The real thing: the bundled model's 540 MB of weights cut short, then loaded."""
    monkeypatch.setenv("DECODELAB_HOME", str(tmp_path / "home"))
    target = converted_dir_for(bundled_gguf_path())
    with conversion_lock(target, progress=None):  # the session's conversion, linked instead of redone
        write_directory_atomically(target, lambda partial: link_files(bundled.path, partial))
    weights = target / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("rb") as whole:
        head = whole.read(MiB)
    weights.unlink()  # a new, shorter file: the hard-linked one is the session's cache and stays whole
    weights.write_bytes(head)
    capfd.readouterr()

    lm = decodelab.load()
    errors = capfd.readouterr().err
    expected = f"the cached model in {target} is damaged (model.safetensors is {MiB} bytes, expected {size})"
    assert f"decodelab: {expected}: converting it again\n" in errors
    assert lm.path == target and weights.stat().st_size == size
    assert lm.next_token_distribution("The capital of France is").top(1)[0].piece == " Paris"
    del lm
    shutil.rmtree(tmp_path / "home")  # 540 MB
