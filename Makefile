# The one task runner: README, CI (.ci/run) and developers all go through these targets.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SRC := duraplan executor planner schemas tools evals tests bench
STAMP := $(VENV)/.duraplan-installed

.PHONY: setup demo test lint typecheck schema bench eval eval-baseline clean distclean

setup: $(STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Reinstall only when the dependencies (pyproject.toml) change; the install is editable.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/duraplan dev --run examples/quickstart.yaml

test: setup lint typecheck
	$(BIN)/pytest -n 2 --dist loadfile -q

lint: setup
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy --strict

schema: setup
	$(BIN)/python -m schemas.generate
	$(BIN)/python -m evals.schema

bench: setup
	$(BIN)/python -m bench.latency

# Tenant A floods at 10x its quota while tenant B runs steady plans (about 3 minutes; bench/README.md).
.PHONY: bench-noisy
bench-noisy: setup
	$(BIN)/python -m bench.noisy_neighbour

# The starter dataset, offline from its committed (authored) recordings.
eval: setup
	$(BIN)/duraplan eval --dataset evals/datasets/starter.yaml --model authored --replay

# Regenerate the reports that replaying the starter recordings must reproduce (a test checks them):
# the authored answers, and the known-bad "gamed" answers of issue 16, which must fail. Authored
# recordings are first stamped with today's prompt hashes, so a later prompt change shows as drift.
GAMED_CASES := onboard-new-hire personalized-welcome prod-deploy-cab-approval
eval-baseline: setup
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python -m evals.stamp evals/datasets/starter.yaml authored gamed
	$(BIN)/duraplan eval --dataset evals/datasets/starter.yaml --model authored --replay \
		--out evals/reports --name starter-authored-replay
	$(BIN)/duraplan eval --dataset evals/datasets/starter.yaml --model gamed --replay \
		--out evals/reports --name starter-gamed-replay $(addprefix --case ,$(GAMED_CASES))

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find $(SRC) -name __pycache__ -type d -prune -exec rm -rf {} +

# Also the venv and the local dev server's data (.duraplan: persisted workflows, temporal.log).
distclean: clean
	rm -rf $(VENV) .duraplan
