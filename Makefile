# Two entry points (see README):  make demo   and   make test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: keeps the CPU build (a plain `torch` could pull a multi-GB CUDA build)
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q "torch>=2.2,<2.14"
	$(BIN)/python -m pip install -q -e ".[dev,plot,serve,text,federated]"
	touch $(STAMP)

.PHONY: setup demo test lint docs learn2learn
setup: $(STAMP)
	$(BIN)/python benchmarks/install_sizes.py

demo: $(STAMP)
	$(BIN)/metarec demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the documentation site, warnings as errors (docs/, mkdocs.yml) into site/
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check metarec tests benchmarks examples
	$(BIN)/ruff format --check metarec tests benchmarks examples
	$(BIN)/mypy

# learn2learn's pure-Python part, for metarec.interop.l2l_maml (seconds; see the script for why
# `pip install learn2learn` is not used)
learn2learn: $(STAMP)
	PYTHON=$(BIN)/python benchmarks/install_learn2learn.sh
