# Set-up and entry points. `make demo` and `make test` install what is missing into
# .venv first. The venv sees the system's site-packages so that a torch the user
# already has (e.g. a CUDA build) is kept; only where no torch is importable is the
# CPU wheel torch==2.13.0 installed, which avoids the multi-GB CUDA download.
PYTHON ?= python3
VENV ?= .venv
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
