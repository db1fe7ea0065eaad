# Two commands for a new user: `make run` opens the app, `make test` runs the whole suite.
# Both create .venv when it is missing or when pyproject.toml changed, and install the project.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint dist bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,cluster]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) main.py

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The wheel and sdist under dist/; the wheel is built from the sdist, so both must carry every file
# the app needs (engine, gui, main and the resources/ files). installer/install.sh --wheel takes it.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist .
	@$(PY) -m zipfile -l dist/*.whl | grep -q 'resources/data/pima.csv' || { echo 'dist: the wheel lacks resources/data/pima.csv' >&2; exit 1; }
	@$(PY) -m zipfile -l dist/*.whl | grep -q 'resources/icons/sensiscope.svg' || { echo 'dist: the wheel lacks the icon' >&2; exit 1; }
	@$(PY) -m zipfile -l dist/*.whl | grep -q 'cli/main.py' || { echo 'dist: the wheel lacks the cli package' >&2; exit 1; }
	@ls -l dist

# Speed and memory figures (never part of `make test`): writes benchmarks/results/<device>.json and .md.
# BENCH_ARGS=--quick for a 1-3 minute smoke run.
bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
