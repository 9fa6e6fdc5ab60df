# Set-up and entry points. `make demo` installs the runtime requirements, `make test` the
# test requirements too, both pinned by tests/constraints.txt so that a fresh clone gives
# the result CI gave. They install into the active virtual environment (or conda env)
# when it already has torch (a GPU user's CUDA build, say), else into .venv, which also
# sees the system's site-packages so that a system-wide torch is kept. Only where no
# torch is importable is the CPU wheel torch==2.13.0 installed, which avoids the
# multi-GB CUDA download.
PYTHON ?= python3
VENV ?= .venv
ACTIVE_ENV_WITH_TORCH := $(shell $(PYTHON) -c "import os, sys, torch; sys.exit(sys.prefix == sys.base_prefix and not os.environ.get('CONDA_PREFIX'))" 2>/dev/null && echo yes)
ifeq ($(ACTIVE_ENV_WITH_TORCH),yes)
VENV := $(shell $(PYTHON) -c "import sys; print(sys.prefix)")
endif
PY := $(VENV)/bin/python
TORCH_CPU ?= torch==2.13.0
CONSTRAINTS := tests/constraints.txt
# The pins as pip reads them (PIP_CONSTRAINT also reaches pip's isolated build
# environment): tests/constraints.txt, less triton where the installed torch brought its
# own (torch pins the triton it was built with).
PINS := $(VENV)/constraints.txt
PIP := PIP_CONSTRAINT=$(abspath $(PINS)) $(PY) -m pip
# Where a C++ compiler exists, a failed build of xlm_fast._C is an error, not a silent
# fallback to the pure-Python tokenizer.
export XLM_FAST_REQUIRE_EXTENSION := $(shell command -v $${CXX:-c++} >/dev/null 2>&1 && echo 1 || echo 0)
PACKAGE_FILES := setup.py pyproject.toml $(CONSTRAINTS) $(wildcard csrc/*.cpp csrc/*.h)

.PHONY: setup setup-runtime demo test lint test-latest test-oldest wheel-check test-asan bench info clean

setup-runtime: $(VENV)/.runtime
setup: $(VENV)/.installed

$(PINS): $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_CPU)
	if $(PY) -c "import sys, importlib.metadata as m; sys.exit(not any(r.startswith('triton') for r in m.requires('torch') or []))"; \
		then grep -v '^triton==' $(CONSTRAINTS) > $@; else cp $(CONSTRAINTS) $@; fi

TEST_EXTRAS := [test,lint]
# $(1): the extras to install with the package ("" or $(TEST_EXTRAS)).
define install_package
	$(PIP) install -e ".$(1)"
	$(PY) -c "import xlm_fast._C" 2>/dev/null || test "$$XLM_FAST_REQUIRE_EXTENSION" = 0 || \
		{ echo "ERROR: a C++ compiler is present but xlm_fast._C does not import"; exit 1; }
endef

$(VENV)/.runtime: $(PINS) $(PACKAGE_FILES)
	$(call install_package,)
	touch $@

$(VENV)/.installed: $(PINS) $(PACKAGE_FILES)
	$(call install_package,$(TEST_EXTRAS))
	touch $@ $(VENV)/.runtime

demo: setup-runtime
	$(PY) -m xlm_fast demo

info: setup-runtime
	$(PY) -m xlm_fast info

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(PY) -m ruff check .

# The suite against the newest releases of every test dependency (torch stays as it is):
# finds drift before it reaches tests/constraints.txt. Not run in CI.
LATEST_VENV := .venv-latest
test-latest:
	test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -c "import torch" 2>/dev/null || $(LATEST_VENV)/bin/python -m pip install $(TORCH_CPU)
	$(LATEST_VENV)/bin/python -c "import torch; print('torch==' + torch.__version__)" > $(LATEST_VENV)/torch.txt
	$(LATEST_VENV)/bin/python -m pip install --upgrade --upgrade-strategy eager -c $(LATEST_VENV)/torch.txt -e ".[test]"
	$(LATEST_VENV)/bin/python -m pip list | grep -i -E '^(transformers|tokenizers|sacremoses|triton|numpy|pytest) '
	$(LATEST_VENV)/bin/python -m pytest -q tests

# The transformers integration tests against the oldest transformers release xlm_fast
# supports (tests/constraints-oldest.txt replaces those pins). Not run in CI.
OLDEST_VENV := .venv-oldest
OLDEST_PINS := tests/constraints-oldest.txt
INTEGRATION_TESTS := tests/test_integration_transformers.py
test-oldest: $(PINS)
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -c "import torch" 2>/dev/null || $(OLDEST_VENV)/bin/python -m pip install $(TORCH_CPU)
	{ grep -v -i -E "^($$(sed -n 's/==.*//p' $(OLDEST_PINS) | paste -sd '|'))==" $(PINS); cat $(OLDEST_PINS); } \
		> $(OLDEST_VENV)/constraints.txt
	PIP_CONSTRAINT=$(abspath $(OLDEST_VENV))/constraints.txt $(OLDEST_VENV)/bin/python -m pip install -e ".[test]"
	$(OLDEST_VENV)/bin/python -m pip list | grep -i -E '^(transformers|tokenizers|accelerate|huggingface.hub) '
	$(OLDEST_VENV)/bin/python -m pytest -q $(INTEGRATION_TESTS)

# Builds the wheel, installs it into a fresh venv ($(TORCH_CPU), the rest pinned) and
# runs tests/wheel_smoke.py there, outside the source tree.
WHEEL_VENV := build/wheel-venv
wheel-check: $(PINS)
	rm -rf dist $(WHEEL_VENV)
	$(PIP) wheel . --no-deps -w dist
	$(PYTHON) -m venv $(WHEEL_VENV)
	PIP_CONSTRAINT=$(abspath $(PINS)) $(WHEEL_VENV)/bin/python -m pip install -q $(TORCH_CPU) dist/*.whl
	cd $(WHEEL_VENV) && bin/python $(abspath tests/wheel_smoke.py) $(abspath dist)

# The extension built with AddressSanitizer + UBSan into build/asan (a copy of the package
# that goes first on sys.path; the normal build is untouched), then the tokenizer tests
# and a short differential fuzz under it. libasan must be loaded before the interpreter's
# allocations, libstdc++ with it (ASan's C++-throw hook needs it at start); leaks are not
# checked (the interpreter keeps memory on purpose). PYTHONMALLOC=malloc: a freed Python
# object goes back to malloc, so that ASan reports a read of it (pymalloc would reuse the
# memory unseen); pytest captures sys.stdout/err only, so that ASan's report shows. Not in CI.
ASAN_DIR := build/asan
ASAN_ENV := LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONMALLOC=malloc PYTHONPATH=$(abspath $(ASAN_DIR))
test-asan: setup
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR) && cp -r xlm_fast $(ASAN_DIR)/ && rm -f $(ASAN_DIR)/xlm_fast/_C*.so
	XLM_FAST_EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -O1 -g" \
		$(PY) setup.py -q build_ext --build-lib $(ASAN_DIR) --build-temp $(ASAN_DIR)/tmp
	cd $(ASAN_DIR) && $(ASAN_ENV) $(abspath $(PY)) -c \
		"import xlm_fast._C as c; assert c.__file__.startswith('$(abspath $(ASAN_DIR))'), c.__file__"
	cd $(ASAN_DIR) && $(ASAN_ENV) $(abspath $(PY)) -m pytest -q -p no:cacheprovider --capture=sys $(abspath tests/test_tokenization_xlm.py) \
		$(abspath tests/test_moses.py)
	$(ASAN_ENV) $(PY) bench/fuzz_tokenization_xlm.py --count 1000

bench: setup
	$(PY) -m pytest -q bench -o python_files="bench_*.py" --benchmark-only

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(OLDEST_VENV) build dist *.egg-info xlm_fast/*.so
