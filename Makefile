# The two commands of the README. Both install what they need first (scripts/bootstrap.sh).
DEMO_DIR ?= demo-corpus

.PHONY: demo test bench

demo:
	@scripts/bootstrap.sh
	.venv/bin/partsim corpus make --out $(DEMO_DIR) --songs 3 --seconds 12 --seed 1
	.venv/bin/partsim corpus info $(DEMO_DIR) --check

test:
	@scripts/bootstrap.sh test
	.venv/bin/python -m pytest -q

bench:
	@scripts/bootstrap.sh
	.venv/bin/partsim corpus bench
