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

# Redocly's OpenAPI linter, pinned; run with the machine's Node.js.
REDOCLY := npx --yes @redocly/cli@2.77.0

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
	echo "  curl -s -H 'Authorization: Bearer $$token' \\" && \
	echo "    'http://$(HOST):$(PORT)/v2/org/$(DEMO_ORG)/nico/task/$(DEMO_TASK)?siteId=$(DEMO_SITE)'" && \
	echo
	$(BIN)/nico-api serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(REDOCLY) lint openapi.yaml --config redocly.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

# The tests that start no process, server or database instance: a quick check while editing.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

# The side-by-side benchmark; BENCH_ARGS="--sizes 1000 --seconds 5" for a quick look.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(if $(BENCH_ARGS),,$(BIN)/python -m bench.active)

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
