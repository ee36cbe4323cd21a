# One-line targets; `make check` is the gate CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: install tools run test test-slow test-all lint format typecheck validate security build deploy bench prices check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install  ## the whole proxy on http://127.0.0.1:3000 (ARGS="--port 8080 --bedrock aws")
	$(BIN)/bedrock-spend-local $(ARGS)

test: install  ## the README's test command: everything but the heavy suites, a few minutes
	$(BIN)/python -m pytest -m "not slow"

test-slow: install  ## the heavy suites: soak, long fuzz runs, long streams, the browser (CI runs them too)
	$(BIN)/python -m pytest -m slow

test-all: test test-slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

# aws-sam-cli, cfn-lint and checkov pin older boto3/botocore; each gets a venv of its own so the
# project's venv (and its tests) always run the newest AWS SDKs.
SAM := .venv-sam/bin/sam
CHECKOV := .venv-checkov/bin/checkov

$(SAM):
	$(PYTHON) -m venv .venv-sam
	.venv-sam/bin/python -m pip install --quiet --upgrade pip
	.venv-sam/bin/python -m pip install --quiet aws-sam-cli cfn-lint

$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet checkov

tools: $(SAM) $(CHECKOV)  ## the template tools, each in its own venv

validate: $(SAM)
	$(SAM) validate --lint
	.venv-sam/bin/cfn-lint template.yaml

# checkov reads the template as written and as SAM transforms it (the roles, permissions and
# stage SAM generates), offline. Each skip is justified in template.yaml.
security: $(CHECKOV) $(SAM)  ## security linter over the template and its SAM transform (offline)
	$(CHECKOV) --skip-download -f template.yaml --framework cloudformation --compact --quiet
	mkdir -p .aws-sam
	.venv-sam/bin/python scripts/sam_transform.py > .aws-sam/transformed.json
	$(CHECKOV) --skip-download -f .aws-sam/transformed.json --framework cloudformation --compact --quiet

# functions/Makefile runs pip with the Python on PATH: the project's, not the tools venv's.
build: install $(SAM)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(SAM) build

deploy: build
	$(SAM) deploy --guided

bench: install  ## proxy vs the reference design, into docs/benchmarks.md (ARGS=--quick: under a minute)
	$(BIN)/python scripts/bench.py $(ARGS)

prices: install
	$(BIN)/python scripts/generate_prices.py

check: lint typecheck validate security test

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .venv-sam .venv-checkov
