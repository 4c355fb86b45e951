# The two commands of the README. Both install what they need first (scripts/bootstrap.sh).
DEMO_DIR ?= demo-data
DEMO_SONGS ?= 200

.PHONY: demo test bench

# make a corpus, start the cluster, index it, run a SearchMix and a SearchStems, keep serving
demo:
	@scripts/bootstrap.sh
	.venv/bin/partsim demo --data $(DEMO_DIR) --songs $(DEMO_SONGS)

test:
	@scripts/bootstrap.sh test
	.venv/bin/python -m pytest -q

bench:
	@scripts/bootstrap.sh
	.venv/bin/partsim corpus bench
	.venv/bin/python -m partsim.services.embedder.bench
	.venv/bin/python -m partsim.services.embedder.bench --pipeline
	.venv/bin/python -m partsim.services.searcher.bench --songs 10000
