# modelcache: `make test` sets up everything it needs (venv, test binaries) and runs every check.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test venv testenv lint format typecheck unit integration e2e e2e-kind demo clean help

help:
	@echo "make test      venv + test binaries + lint + format check + mypy + the whole test suite"
	@echo "make lint      ruff check, ruff format --check, mypy --strict modelcache, lint-imports (layering)"
	@echo "make testenv   build (or reuse) kube-apiserver, etcd, kubectl, helm, kubelet & co and the images in ~/.cache/modelcache"
	@echo "make e2e       the tests on a real cluster with kubelet nodes (tests/cluster; root)"
	@echo "make e2e-kind  the same e2e tests on kind, node image built here (root): docs/cluster.md"
	@echo "make unit      fast tests, no services"
	@echo "make integration  tests against real kube-apiserver + etcd and SeaweedFS"
	@echo "make demo      see it work"

# Re-install when pyproject.toml changes; pip's cache makes a re-install cheap.
$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	@touch $@

venv: $(INSTALLED)

# With root, also kubelet & co, CoreDNS and the images for the e2e cluster (one line if not).
testenv: venv
	$(BIN)/modelcache dev build --cluster

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict modelcache
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: venv
	$(BIN)/mypy --strict modelcache

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: testenv
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

e2e: testenv
	$(BIN)/python -m pytest tests/cluster $(PYTEST_ARGS)

# The same e2e tests on kind: kind, kubeadm and the node image are built here (root).
e2e-kind: venv
	MODELCACHE_E2E_CLUSTER=kind $(BIN)/python -m pytest tests/cluster $(PYTEST_ARGS)

test: testenv lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: testenv
	$(BIN)/python examples/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
