# authd: `make run` serves the example zone, `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test quick lint unit interop bench fuzz clean deps

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/authd serve -c authd.toml

# Debian packages the interop tests use; installed only when root on Debian and missing.
DEB_PACKAGES := knot knot-dnsutils bind9 bind9-dnsutils ldnsutils nsd dnsperf prometheus unbound groff-base iproute2
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v knotd >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES); \
	fi

test: $(STAMP) deps
	$(BIN)/python -m pytest -q tests

# The fast loop while editing: everything not marked slow (no live servers), under a minute.
quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/python -m authd.bench run --quick

# Long fuzzing sessions (atheris when installed, else hypothesis); add --save to grow the corpus.
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz/run.py all --seconds 300

lint: $(STAMP)
	$(BIN)/ruff check authd tests
	$(BIN)/ruff format --check authd tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
