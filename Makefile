# The two commands of the README: `make demo` and `make test`. Everything they need is installed
# here (Debian packages with apt-get, Python packages pinned by constraints.txt into .venv).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
FS := $(VENV)/bin/funnelscope
DEMO_STORE ?= demo/shop.duckdb
DEMO_CUSTOMERS ?= 100000
DEMO_DAYS ?= 90
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install install-dev system-deps demo test bench lint typecheck clean

$(VENV)/.runtime: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e ".[dev,spark]"
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev system-deps

# Debian packages the tests use: Chromium for the dashboard's browser tests, Java for Spark.
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v java >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core default-jre-headless >/dev/null; \
	  else sudo apt-get update -qq && \
	    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core default-jre-headless >/dev/null; fi; \
	fi

demo: install
	$(FS) simulate --customers $(DEMO_CUSTOMERS) --days $(DEMO_DAYS) --seed 7 --store $(DEMO_STORE)
	$(FS) report --store $(DEMO_STORE)
	$(FS) serve --store $(DEMO_STORE) --host $(HOST) --port $(PORT) --demo

test: install-dev
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install-dev
	$(PY) benchmarks/run.py $(BENCH_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: install-dev
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) demo .pytest_cache
