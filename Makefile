# medrobust — every target creates .venv when it is missing and is safe to re-run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medrobust-installed
PIP    := $(PY) -m pip install --no-cache-dir --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean browser

setup: $(STAMP)

# Headless Chromium renders report.html in the report tests (Debian package; root or sudo needed).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -q pip==26.3
	$(PIP) -r requirements-dev.txt -c constraints.txt
	$(PIP) --no-deps torchattacks==3.5.1
	$(PIP) --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/medrobust demo

test: setup browser
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/attacks.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
