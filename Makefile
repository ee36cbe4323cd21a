# One-line targets; `make check` is the gate CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: install run test test-fast lint format typecheck validate security build deploy bench prices check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install  ## the whole proxy on http://127.0.0.1:3000 (ARGS="--port 8080 --bedrock aws")
	$(BIN)/bedrock-spend-local $(ARGS)

test: install  ## the README's test command
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

validate: install
	$(BIN)/sam validate --lint
	$(BIN)/cfn-lint template.yaml

# checkov pins old boto3/packaging, so it gets a venv of its own.
.venv-tools/bin/checkov:
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/python -m pip install --quiet checkov

security: .venv-tools/bin/checkov  ## security linter over the template (offline); skips are justified in template.yaml
	.venv-tools/bin/checkov --skip-download -f template.yaml --framework cloudformation --compact --quiet

build: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/sam build

deploy: build
	$(BIN)/sam deploy --guided

bench: install
	$(BIN)/python scripts/bench.py

prices: install
	$(BIN)/python scripts/generate_prices.py

check: lint typecheck validate security test

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .venv-tools
