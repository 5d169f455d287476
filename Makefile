# Roost: `make demo` runs the gateway's demo, `make test` runs every check.
# Both install what is missing first (apt packages, then .venv).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# pytest-xdist workers (the suite waits on brokers and processes more than on the CPU), and
# the Pythons test-matrix runs the suite on.
WORKERS ?= 2
MATRIX  ?= 3.11 3.13

.PHONY: demo demo-mesos test test-busy test-matrix quick lint bench system-deps deps clean

demo: deps                    ## private mosquitto + gateway + a demo client
	$(BIN)/roost demo

demo-mesos: deps              ## Mesos stand-in with two agents + the gateway on the mesos executor
	$(BIN)/python examples/mesos_demo.py

test: deps lint               ## the whole suite (what .ci/run runs)
	$(BIN)/pytest -n $(WORKERS)

test-busy: system-deps        ## make test beside one busy process per core; RUNS=5 FRESH=--fresh for fresh clones
	tests/stress.sh $(or $(RUNS),1) $(FRESH)

test-matrix: system-deps      ## the suite on each Python of MATRIX, each in its own .venv-X.Y
	@for version in $(MATRIX); do tests/matrix.sh $$version -n $(WORKERS) || exit 1; done

quick: deps                   ## fast local iteration: unit and fast integration tests
	$(BIN)/pytest -m "not slow" -x -q -n $(WORKERS)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: deps                   ## the benchmark (see benchmarks/README.md)
	$(BIN)/python -m benchmarks

system-deps:                  ## apt packages, installed only when missing
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_rr >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	$(PY) -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

deps: system-deps $(VENV)/.installed

# The http-parser shim goes in before pymesos, or pip tries to build the broken C original.
$(VENV)/.installed: pyproject.toml shims/http-parser/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q ./shims/http-parser
	$(BIN)/pip install -q -e '.[dev,mesos]'
	$(BIN)/pip check
	touch $@

clean:
	rm -rf $(VENV) $(VENV)-* .mypy_cache .pytest_cache .ruff_cache
