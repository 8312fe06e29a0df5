# Two commands matter: `make run` and `make test`. Everything else they need, they install themselves.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: run test unit integration lint typecheck bench install clean wheel

# conformance mode: `make test COUCH_URL=http://admin:secret@host:port` runs the suite against that server
ifdef COUCH_URL
export SYNC_TEST_COUCH_URL := $(COUCH_URL)
endif

install: $(STAMP) $(NODE_STAMP)

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PY) >/dev/null || { echo "python3 is required"; exit 1; }
	@test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || bash deploy/dev/install-system-packages.sh node
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run: install
	$(BIN)/sync-gateway dev

test: install
	bash deploy/dev/install-system-packages.sh test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

unit: install
	$(BIN)/pytest -q -p no:cacheprovider -m "not integration" tests/unit tests/contract

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/run.py

# the distributable package (schemas, rules, profiles, UI inside); install it with requirements-runtime.lock
wheel: install
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w dist .

clean:
	rm -rf $(VENV) node_modules .data dist build
