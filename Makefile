# nico-task-api: `make run` serves the demo, `make test` passes the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.serve-installed
DEV_STAMP := $(VENV)/.dev-installed
UV_LOCK := --universal --python-version 3.11 --generate-hashes --quiet
HOST ?= 127.0.0.1
PORT ?= 8080

# The demo's running task, with its multi-stage report (nico_api/storage/demo.yaml).
DEMO_ORG := acme-inc
DEMO_SITE := 5518ae98-48f4-47c1-b4d3-7b3747fa4d0c
DEMO_TASK := e22423ac-1fbd-4d60-8093-20164fbc635b
# A demo rack with no task holding it (R-15 at sjc-dc1; the pending demo task "Power cycle rack
# R-15" is a snapshot that targets no rack): power it on and watch its task.
DEMO_RACK := 1de9d021-b858-4b75-acf1-687eb024bfc7

# Redocly's and Spectral's OpenAPI linters, pinned; run with the machine's Node.js.
REDOCLY := npx --yes @redocly/cli@2.77.0
SPECTRAL := npx --yes @stoplight/spectral-cli@6.16.3

# Test processes in parallel: many tests wait on servers, subprocesses and timeouts.
TEST_WORKERS ?= 3
# Every test process and server the suite starts reads the compiled bytecode the first one
# wrote, instead of compiling the package and the tests again (a setting some machines make).
unexport PYTHONDONTWRITEBYTECODE
FAST_WORKERS ?= 2

.PHONY: run test test-deep test-fast lint bench install lock wheel-check clean

# Installs come from the hashed lock files in requirements/ (`make lock` renews them): serving
# needs serve.txt alone; the tests, linters and lock tool need dev.txt.
install: $(DEV_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(SERVE_STAMP): requirements/serve.txt requirements/build.txt pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/build.txt -r requirements/serve.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(DEV_STAMP): requirements/dev.txt requirements/build.txt pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/build.txt -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@ $(SERVE_STAMP)

# Renew the lock files from pyproject.toml's ranges (LOCK_ARGS="--upgrade" for the newest).
lock: $(DEV_STAMP)
	$(BIN)/uv pip compile pyproject.toml $(UV_LOCK) $(LOCK_ARGS) --extra dev -o requirements/dev.txt
	@# Serving's versions are the ones tested: a subset of dev.txt.
	$(BIN)/uv pip compile pyproject.toml $(UV_LOCK) -c requirements/dev.txt -o requirements/serve.txt
	$(BIN)/uv pip compile requirements/build.in $(UV_LOCK) $(LOCK_ARGS) -o requirements/build.txt

# The wheel, installed from serve.txt into a new virtualenv outside the checkout, serving the
# demo and migrating PostgreSQL (NICO_TEST_DATABASE_URL's server).
wheel-check: $(DEV_STAMP)
	bash .ci/wheel-check

run: $(SERVE_STAMP)
	$(BIN)/nico-api db init
	$(BIN)/nico-api db seed --demo
	@token=$$($(BIN)/nico-api token --org $(DEMO_ORG) --role PROVIDER_ADMIN --ttl 86400 --create-key) && \
	echo && echo "Try it (the token is valid for 24 hours):" && echo && \
	echo "  TOKEN='$$token'" && echo && \
	echo "  curl -s -H \"Authorization: Bearer \$$TOKEN\" \\" && \
	echo "    'http://$(HOST):$(PORT)/v2/org/$(DEMO_ORG)/nico/task/$(DEMO_TASK)?siteId=$(DEMO_SITE)'" && \
	echo && echo "Power on a rack; NICo Flow (simulated) runs the task it returns:" && echo && \
	echo "  curl -s -X PATCH -H \"Authorization: Bearer \$$TOKEN\" -H 'Content-Type: application/json' \\" && \
	echo "    -d '{\"siteId\": \"$(DEMO_SITE)\", \"state\": \"On\"}' \\" && \
	echo "    'http://$(HOST):$(PORT)/v2/org/$(DEMO_ORG)/nico/rack/$(DEMO_RACK)/power'" && \
	echo
	@# The simulated NICo Flow runs beside the server, and stops with it; Ctrl-C (or SIGTERM)
	@# stopping the server is a clean exit, not a make error.
	@$(BIN)/nico-api flow --log-level warning & flow=$$!; \
	trap 'kill $$flow 2>/dev/null; wait $$flow 2>/dev/null; exit 0' INT TERM; \
	$(BIN)/nico-api serve --host $(HOST) --port $(PORT); status=$$?; \
	kill $$flow 2>/dev/null; wait $$flow 2>/dev/null; \
	case $$status in 0|130|143) exit 0;; *) exit $$status;; esac

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(REDOCLY) lint openapi.yaml --config redocly.yaml
	$(SPECTRAL) lint openapi.yaml --ruleset .spectral.yaml --fail-severity warn

test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m "not deep"

# The long runs `make test` leaves out: schemathesis's generated requests, operation by
# operation, and whole lifecycles over `nico-api serve` and `nico-api flow` processes.
test-deep: $(DEV_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m deep

# The tests that start no process, server or database instance, wait on no clock and take
# well under a second of CPU each: a quick check while editing.
test-fast: $(DEV_STAMP)
	$(BIN)/pytest -n $(FAST_WORKERS) --dist worksteal -m "not slow and not deep"

# The side-by-side benchmark, then the simulated Flow's (1,000 and 10,000 tasks at once),
# creates on unused racks beside a GET of what they made, what `nico-api proxy` adds to a task
# GET, and the 3-minute mixed load on each backend, which fails the target when an invariant
# fails (bench/load.py);
# BENCH_ARGS="--sizes 1000 --seconds 5" for a quick look at the first alone.
bench: $(DEV_STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.inprocess
	$(if $(BENCH_ARGS),,$(BIN)/python -m bench.active)
	$(if $(BENCH_ARGS),,$(BIN)/python -m bench.flow)
	$(if $(BENCH_ARGS),,$(BIN)/python -m bench.create)
	$(if $(BENCH_ARGS),,$(BIN)/python -m bench.proxy)
	$(if $(BENCH_ARGS),,$(BIN)/python -m bench.load --backend sqlite --seconds 180)
	$(if $(BENCH_ARGS),,$(BIN)/python -m bench.load --backend postgresql --seconds 180)

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
