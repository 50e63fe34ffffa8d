# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv in the checkout and install medmulti into it when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medmulti-installed
PYTEST_ARGS ?=

.PHONY: demo test lint docs stress bench tutorials cli-docs clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,dask]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medmulti demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# The static checks alone (make test runs them first): ruff over the tree, mypy strict on the public API.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# Quick smoke run of every benchmark (full runs: drop --quick; figures in benchmarks/RESULTS.md).
bench: $(STAMP)
	$(PY) benchmarks/read_series.py --quick
	$(PY) benchmarks/preprocess_study.py --quick
	$(PY) benchmarks/validate.py --quick
	$(PY) benchmarks/feed.py --quick

# Long reliability tier: >= 5,000 fuzzed inputs per reader, truncation sweep, bombs, 50 kills.
stress: $(STAMP)
	$(PY) benchmarks/stress.py --json stress-results.json

# Rebuild the tutorial notebooks from tutorials/_src and execute them.
tutorials: $(STAMP)
	$(PY) tutorials/_build.py && $(PY) -m pytest tests/test_tutorials.py -q

# Regenerate docs/cli.md from the argparse parsers.
cli-docs: $(STAMP)
	$(PY) tests/test_docs_build.py --write-cli-md

clean:
	rm -rf $(VENV) site .pytest_cache
