# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   creates .venv if missing, installs simsearch, runs the main job
#   make test   creates .venv if missing, installs simsearch + test tools, runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# CPU build of torch where there is no GPU: a local CPU wheel if pip can find one, else PyTorch's
# CPU index. With a GPU, the default (CUDA) build from PyPI.
$(VENV)/.torch: | $(BIN)/python
	@if $(BIN)/python -c "import torch" 2>/dev/null; then :; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install "torch>=2.2"; \
	else $(BIN)/pip install "torch==2.13.0+cpu" 2>/dev/null \
	  || $(BIN)/pip install torch --index-url https://download.pytorch.org/whl/cpu; fi
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -e ".[dev]"
	@touch $@

# One torch thread per process: the main task models are small, and on a 2-core machine a second
# intra-op thread competes with Optuna and the simulator more than it helps.
demo: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/simsearch compare --problem gmm2d \
	  --samplers random,tpe,bayesopt,reinforce,autosimulate --seeds 2 --trials 8 --out $(OUT)

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out
