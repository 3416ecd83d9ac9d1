# musicrec: `make run` and `make test` bootstrap everything they need into .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The serving environment: kserve's SDK needs pandas < 3, so it lives apart from the pipeline's stack.
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
SERVE_PACKAGES := kserve tensorflow-cpu pyarrow pyyaml
SERVE_MODELS ?= runs/default/model_store
SERVE_PORT ?= 8080
# kfp.local and tf.Transform leave temporary directories behind; keep them inside the project.
export TMPDIR := $(CURDIR)/.tmp

# Images. A docker CLI with BuildKit: the default one if it has buildx, else Debian's docker.io client (BuildKit
# built in). The base is pulled if it can be, else built here with debootstrap (containers/base-image.sh).
DOCKER ?= $(shell docker buildx version >/dev/null 2>&1 && echo docker || { test -x /usr/bin/docker && echo /usr/bin/docker; } || echo docker)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= musicrec:$(VERSION)
BASE_IMAGE ?= python:3.11-slim-bookworm
# The CA bundle pip trusts inside the build (a BuildKit secret, never in the image).
PIP_CA ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
comma := ,
BUILD = DOCKER_BUILDKIT=1 $(DOCKER) build -f containers/Dockerfile \
	--build-arg BASE_IMAGE=$$(DOCKER=$(DOCKER) containers/base-image.sh $(BASE_IMAGE)) \
	--build-arg VERSION=$(VERSION) \
	--build-arg GIT_REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown)$$(git diff --quiet HEAD 2>/dev/null || echo -dirty) \
	$(if $(PIP_CA),--secret id=pip_ca$(comma)src=$(PIP_CA))

.DEFAULT_GOAL := help

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@mkdir -p $(TMPDIR)
	touch $@

$(SERVE_STAMP): pyproject.toml constraints-serving.txt
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/pip install --quiet -c constraints-serving.txt $(SERVE_PACKAGES)
	$(SERVE_VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

install: $(STAMP) ## Create .venv with the pinned stack and dev tools

run: $(STAMP) ## Run the whole DAG locally (kfp.local) on the embedded default sample
	@mkdir -p $(TMPDIR)
	$(BIN)/musicrec run --output runs/default

serve-env: $(SERVE_STAMP) ## Create .venv-serve: kserve's model server and TensorFlow, for `musicrec serve`

serve: $(SERVE_STAMP) ## Serve the pushed models of SERVE_MODELS (default runs/default/model_store, from make run) on SERVE_PORT
	@test -d $(SERVE_MODELS)/sentiment || { echo "no pushed models in $(SERVE_MODELS): run 'make run' first" >&2; exit 1; }
	$(SERVE_VENV)/bin/musicrec serve --http-port $(SERVE_PORT) \
		--model $(SERVE_MODELS)/sentiment --model $(SERVE_MODELS)/recommender

test: $(STAMP) $(SERVE_STAMP) lint ## Lint, then run every test but the container ones (no docker needed); slow ones included
	@mkdir -p $(TMPDIR)
	$(BIN)/pytest -m "not container"

test-fast: $(STAMP) ## Run the tests not marked slow
	@mkdir -p $(TMPDIR)
	$(BIN)/pytest -m "not slow and not container"

image: ## Build the CPU image $(IMAGE) (needs docker)
	@mkdir -p $(TMPDIR)
	$(BUILD) --build-arg VARIANT=cpu --build-arg IMAGE=$(IMAGE) -t $(IMAGE) .

image-gpu: ## Build the GPU image $(IMAGE)-gpu of the training steps (needs docker; CUDA wheels, several GB)
	@mkdir -p $(TMPDIR)
	$(BUILD) --build-arg VARIANT=gpu --build-arg IMAGE=$(IMAGE)-gpu -t $(IMAGE)-gpu .

images: image image-gpu ## Build both images (needs docker)

test-containers: $(STAMP) image ## Run the whole DAG inside the CPU image through kfp.local's DockerRunner (needs docker)
	@mkdir -p $(TMPDIR)
	MUSICREC_TEST_IMAGE=$(IMAGE) $(BIN)/pytest -m container

lint: $(STAMP) ## Lint the code, Dockerfile, import layers, YAML and CI workflows (all offline)
	$(BIN)/ruff check src components pipelines tests benchmarks
	$(BIN)/ruff format --check src components pipelines tests benchmarks
	$(BIN)/hadolint containers/Dockerfile
	$(BIN)/lint-imports
	$(BIN)/yamllint -c .yamllint.yaml manifests .github
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yaml
	$(BIN)/actionlint .github/workflows/*.yaml

compile: $(STAMP) ## Recompile pipelines/music_recommender.yaml
	$(BIN)/musicrec compile --out pipelines/music_recommender.yaml

constraints-serving: ## Re-resolve the serving environment and rewrite constraints-serving.txt
	rm -rf .tmp/serving-venv && $(PYTHON) -m venv .tmp/serving-venv
	.tmp/serving-venv/bin/pip install --quiet --upgrade pip
	.tmp/serving-venv/bin/pip install --quiet $(SERVE_PACKAGES)
	{ echo "# The serving environment (make serve-env): the kserve SDK and TensorFlow, apart from the pipeline's stack"; \
	  echo "# (kserve needs pandas < 3). Regenerate with 'make constraints-serving'."; \
	  .tmp/serving-venv/bin/pip freeze; } > constraints-serving.txt

constraints: ## Re-resolve the stack in a scratch venv and rewrite constraints.txt
	rm -rf .tmp/constraints-venv && $(PYTHON) -m venv .tmp/constraints-venv
	.tmp/constraints-venv/bin/pip install --quiet --upgrade pip 'setuptools>=77'
	.tmp/constraints-venv/bin/pip install --quiet -e '.[dev]'
	{ echo "# Every package of the one resolution known to work (Python 3.11); regenerate with 'make constraints'."; \
	  .tmp/constraints-venv/bin/pip freeze --all --exclude-editable | grep -v -E '^(pip|wheel)=='; } > constraints.txt

clean: ## Remove the venv, run outputs and temporary files
	rm -rf $(VENV) $(SERVE_VENV) .tmp runs .pytest_cache

.PHONY: help install run test test-fast lint compile constraints clean image image-gpu images test-containers serve serve-env constraints-serving
