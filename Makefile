# The way in: `make repro` runs the pipeline, `make test` runs every test.
# Both create .venv and install the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
CLUSTER := $(VENV)/.cluster
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: help install cluster browser fashion-mnist postgres repro compare test test-fast bench bench-stabilizers bench-data bench-evaluator bench-server bench-sweep profile lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the pinned requirements

$(CLUSTER): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[cluster]"
	@touch $(CLUSTER)

cluster: $(CLUSTER)  ## the optional extra: sweeps on a Ray cluster, a tracking server on PostgreSQL (the tests use it too)

repro: $(STAMP)  ## run the whole pipeline (dvc repro)
	dvc repro

compare: $(STAMP)  ## compare the tracked training runs across seeds (cifar-dcgan-compare)
	cifar-dcgan-compare

test: $(STAMP) $(CLUSTER) browser fashion-mnist postgres  ## run all tests, slow end-to-end ones included
	pytest

browser:  ## Debian's chromium for the MLflow UI test (installed if missing, when run as root)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed: the MLflow UI test will be skipped"

fashion-mnist:  ## Debian's real Fashion-MNIST for the any-images test (installed if missing, when run as root)
	@test -d /usr/share/datasets/fashion-mnist || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || \
		echo "dataset-fashion-mnist is not installed: the Fashion-MNIST test will be skipped"

postgres:  ## PostgreSQL 15 for the shared tracking store test (installed if missing, when run as root)
	@test -x /usr/lib/postgresql/15/bin/initdb || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; } || \
		echo "PostgreSQL 15 is not installed: the shared tracking store test will be skipped"

test-fast: $(STAMP) $(CLUSTER)  ## run the fast tests only
	pytest -m "not slow"

bench: $(STAMP)  ## measure the training step against the classic loop (several minutes; use a quiet machine)
	python benchmarks/bench.py

bench-stabilizers: $(STAMP)  ## what each stabilizer (spectral norm, hinge, d_steps, DiffAugment, ...) costs per iteration
	python benchmarks/bench_stabilizers.py

bench-data: $(STAMP)  ## other images: prepare a folder of 60,000 JPEGs, the images' memory in training, each recipe's step
	python benchmarks/bench_data.py

bench-evaluator: $(STAMP)  ## where train-evaluator's time goes: a batch with and without augmentation, the test pass, outputs
	python benchmarks/bench_evaluator.py

bench-server: $(CLUSTER) postgres  ## the tracking server on PostgreSQL under 1 to 32 writers at once: values stored per second, any lost
	python benchmarks/bench_server.py

bench-sweep: $(CLUSTER) postgres  ## a sweep on a Ray cluster against dvc queue, the quick profile (~30 min; as root; ARCHIVE=cifar-10-python.tar.gz)
	python benchmarks/bench_sweep.py --archive "$(ARCHIVE)"

profile: $(STAMP)  ## where one iteration's time goes, by kind of op, in float32 and bf16 (minutes; a quiet machine)
	python benchmarks/profile_step.py

lint: $(STAMP)  ## ruff format --check and ruff check
	ruff format --check .
	ruff check .

format: $(STAMP)  ## ruff format and ruff check --fix
	ruff format .
	ruff check --fix .

clean:  ## remove caches (not data, models or the tracking store)
	rm -rf .pytest_cache .ruff_cache
