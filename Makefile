# nico-task-api: `make run` serves the demo, `make test` passes the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

# The demo's running task, with its multi-stage report (nico_api/demo.yaml).
DEMO_ORG := acme-inc
DEMO_SITE := 5518ae98-48f4-47c1-b4d3-7b3747fa4d0c
DEMO_TASK := e22423ac-1fbd-4d60-8093-20164fbc635b
# A demo rack that nothing runs on (R-15 at sjc-dc1): power it on and watch its task.
DEMO_RACK := 1de9d021-b858-4b75-acf1-687eb024bfc7

# Redocly's and Spectral's OpenAPI linters, pinned; run with the machine's Node.js.
REDOCLY := npx --yes @redocly/cli@2.77.0
SPECTRAL := npx --yes @stoplight/spectral-cli@6.16.3

# Test processes in parallel: many tests wait on servers, subprocesses and timeouts.
TEST_WORKERS ?= 3

.PHONY: run test test-fast lint bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/nico-api db init
	$(BIN)/nico-api db seed --demo
	@token=$$($(BIN)/nico-api token --org $(DEMO_ORG) --role PROVIDER_ADMIN --ttl 86400) && \
	echo && echo "Try it (the token is valid for 24 hours):" && echo && \
	echo "  TOKEN='$$token'" && echo && \
	echo "  curl -s -H \"Authorization: Bearer \$$TOKEN\" \\" && \
	echo "    'http://$(HOST):$(PORT)/v2/org/$(DEMO_ORG)/nico/task/$(DEMO_TASK)?siteId=$(DEMO_SITE)'" && \
	echo && echo "Power on a rack; NICo Flow (simulated) runs the task it returns:" && echo && \
	echo "  curl -s -X PATCH -H \"Authorization: Bearer \$$TOKEN\" -H 'Content-Type: application/json' \\" && \
	echo "    -d '{\"siteId\": \"$(DEMO_SITE)\", \"state\": \"On\"}' \\" && \
	echo "    'http://$(HOST):$(PORT)/v2/org/$(DEMO_ORG)/nico/rack/$(DEMO_RACK)/power'" && \
	echo
	@# The simulated NICo Flow runs beside the server, and stops with it.
	@$(BIN)/nico-api flow --log-level warning & flow=$$!; \
	trap 'kill $$flow 2>/dev/null; wait $$flow 2>/dev/null' EXIT INT TERM; \
	$(BIN)/nico-api serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(REDOCLY) lint openapi.yaml --config redocly.yaml
	$(SPECTRAL) lint openapi.yaml --ruleset .spectral.yaml --fail-severity warn

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

# The tests that start no process, server or database instance: a quick check while editing.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

# The side-by-side benchmark, then the simulated Flow's (1,000 tasks at once);
# BENCH_ARGS="--sizes 1000 --seconds 5" for a quick look at the first alone.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(if $(BENCH_ARGS),,$(BIN)/python -m bench.active)
	$(if $(BENCH_ARGS),,$(BIN)/python -m bench.flow)

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
