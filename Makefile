# musicrec: `make run` and `make test` bootstrap everything they need into .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# kfp.local and tf.Transform leave temporary directories behind; keep them inside the project.
export TMPDIR := $(CURDIR)/.tmp

.DEFAULT_GOAL := help

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@mkdir -p $(TMPDIR)
	touch $@

install: $(STAMP) ## Create .venv with the pinned stack and dev tools

run: $(STAMP) ## Run the whole DAG locally (kfp.local) on the embedded default sample
	@mkdir -p $(TMPDIR)
	$(BIN)/musicrec run --output runs/default

test: $(STAMP) lint ## Lint, then run every test, the slow end-to-end ones included
	@mkdir -p $(TMPDIR)
	$(BIN)/pytest

test-fast: $(STAMP) ## Run the tests not marked slow
	@mkdir -p $(TMPDIR)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP) ## Lint and format-check the code and the Dockerfile; check the import layers (import-linter)
	$(BIN)/ruff check src components pipelines tests benchmarks
	$(BIN)/ruff format --check src components pipelines tests benchmarks
	$(BIN)/hadolint containers/Dockerfile
	$(BIN)/lint-imports

compile: $(STAMP) ## Recompile pipelines/music_recommender.yaml
	$(BIN)/musicrec compile

constraints: ## Re-resolve the stack in a scratch venv and rewrite constraints.txt
	rm -rf .tmp/constraints-venv && $(PYTHON) -m venv .tmp/constraints-venv
	.tmp/constraints-venv/bin/pip install --quiet --upgrade pip
	.tmp/constraints-venv/bin/pip install --quiet -e '.[dev]'
	{ echo "# Every package of the one resolution known to work (Python 3.11); regenerate with 'make constraints'."; \
	  .tmp/constraints-venv/bin/pip freeze --exclude-editable; } > constraints.txt

clean: ## Remove the venv, run outputs and temporary files
	rm -rf $(VENV) .tmp runs .pytest_cache

.PHONY: help install run test test-fast lint compile constraints clean
