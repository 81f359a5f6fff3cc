# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Two test processes: much of a test's time is single-threaded (graph building, conversion, subprocesses).
TEST_WORKERS ?= 2

.PHONY: install demo test test-fast benchmarks clean

install: $(VENV)/.installed

# Re-install whenever pyproject.toml changes, so `make` always refreshes .venv.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,demo,onnx,serving]"
	touch $@

demo: install
	$(VENV)/bin/nin-keras demo --out runs/demo

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
