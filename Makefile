# Set-up and entry points. `make demo` and `make test` install what is missing first:
# into the active virtual environment (or conda env) when it already has torch (a GPU
# user's CUDA build, say), else into .venv, which also sees the system's site-packages
# so that a system-wide torch is kept. Only where no torch is importable is the CPU
# wheel torch==2.13.0 installed, which avoids the multi-GB CUDA download.
PYTHON ?= python3
VENV ?= .venv
ACTIVE_ENV_WITH_TORCH := $(shell $(PYTHON) -c "import os, sys, torch; sys.exit(sys.prefix == sys.base_prefix and not os.environ.get('CONDA_PREFIX'))" 2>/dev/null && echo yes)
ifeq ($(ACTIVE_ENV_WITH_TORCH),yes)
VENV := $(shell $(PYTHON) -c "import sys; print(sys.prefix)")
endif
PY := $(VENV)/bin/python
TORCH_CPU ?= torch==2.13.0

.PHONY: setup demo test bench info clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_CPU)
	$(PY) -m pip install -e ".[test]"
	@$(PY) -c "import xlm_fast._C" 2>/dev/null || echo "WARNING: the C++ extension xlm_fast._C was not built (no C++ compiler?); the pure-Python tokenizer will be used."
	touch $@

demo: setup
	$(PY) -m xlm_fast demo

info: setup
	$(PY) -m xlm_fast info

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m pytest -q bench -o python_files="bench_*.py" --benchmark-only

clean:
	rm -rf $(VENV) build *.egg-info xlm_fast/*.so
