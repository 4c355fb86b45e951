# partsim's commands. `make test` is the README's test command and what CI runs (.ci/run: lint, then tests).
# Every target installs what it needs first (scripts/bootstrap.sh, idempotent).
DEMO_DIR ?= demo-data
DEMO_SONGS ?= 200
PY := .venv/bin/python

.PHONY: all demo test test-fast lint generate check-generated bench

all: lint test

# make a corpus, start the cluster, index it, run a SearchMix and a SearchStems, keep serving
demo:
	@scripts/bootstrap.sh
	.venv/bin/partsim demo --data $(DEMO_DIR) --songs $(DEMO_SONGS)

# everything, the real components included (Milvus, Redis, FluidSynth, the cluster, the shipped models)
test:
	@scripts/bootstrap.sh test
	$(PY) -m pytest -q

# the edit-test loop: everything but the tests marked slow (under 60 s on 2 cores)
test-fast:
	@scripts/bootstrap.sh test
	$(PY) -m pytest -q -m "not slow"

# ruff (rules and reasons in pyproject.toml), the formatter's verdict, mypy on services, client and model,
# and the generated files against their generators
lint: check-generated
	$(PY) -m ruff check src tests scripts
	$(PY) -m ruff format --check src tests scripts
	$(PY) -m mypy

# Every generated file and its generator, in one place. `generate` rewrites them; `check-generated` fails
# when one is stale. (deploy/requirements/{cpu,gpu}.txt are generated too, by deploy/requirements/lock.sh,
# which needs the package index: run it by hand when dependencies change.)

generate:
	@scripts/bootstrap.sh test
	PYTHON=$(PY) scripts/gen-protos.sh
	$(PY) scripts/gen-dashboard.py
	$(PY) scripts/gen-k8s-monitoring.py
	$(PY) scripts/gen-openapi.py

check-generated:
	@scripts/bootstrap.sh test
	PYTHON=$(PY) scripts/gen-protos.sh --check
	$(PY) scripts/gen-dashboard.py --check
	$(PY) scripts/gen-k8s-monitoring.py --check
	$(PY) scripts/gen-openapi.py --check

bench:
	@scripts/bootstrap.sh
	.venv/bin/partsim corpus bench
	$(PY) -m partsim.services.embedder.bench
	$(PY) -m partsim.services.embedder.bench --pipeline
	$(PY) -m partsim.services.searcher.bench --songs 10000
