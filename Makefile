# The two commands a newcomer runs (see README.md). Both work on a fresh machine:
# they create .venv, install the pinned toolchain, then do their job.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench setup system clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch goes first, pinned exactly, so pip takes the CPU build and never a CUDA one.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,keras,ray]'
	touch $(STAMP)

setup: $(STAMP)

# A host build cannot judge the android target's max_latency_ms (host wall time is not
# a Pixel 7's latency; judging it needs --runner qemu, whose emulated environment needs
# apt packages a fresh machine lacks), so the demo waives it, visibly: the build's
# latency line and the manifest's gates.latency_gate say "waived".
demo: $(STAMP)
	$(BIN)/edgepack build --project samples/digits --target android --output dist --no-latency-gate

# The suite runs real qemu, sshd, chromium and cross compilers: apt installs them once.
system:
	scripts/system-packages.sh

test: $(STAMP) system
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/digits_formats.py

clean:
	rm -rf dist samples/*/dist .pytest_cache
