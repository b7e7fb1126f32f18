# medrobust — every target creates .venv when it is missing and is safe to re-run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medrobust-installed
PIP    := $(PY) -m pip install --no-cache-dir --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -q pip==26.3
	$(PIP) -r requirements-dev.txt -c constraints.txt
	$(PIP) --no-deps torchattacks==3.5.1
	$(PIP) --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/medrobust demo

test: setup
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/attacks.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
