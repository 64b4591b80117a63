# MailMatrix: `make help` lists the targets. Everything installs into .venv in this folder.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo's workdir: set here or on the command line (`make demo DEMO_WORKDIR=elsewhere`), never
# taken from the environment, so an exported WORKDIR decides neither where the demo writes nor
# what `make clean` removes.
DEMO_WORKDIR := demo
# The Lambda runtimes (infra/template.yaml runs python3.12), for `make test-pythons`.
PYTHONS ?= 3.12 3.13

.DEFAULT_GOAL := help
.PHONY: help install demo test test-pythons check lint types unit bench mailcheck deploy clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install MailMatrix with its pinned dependencies

demo: $(STAMP) ## Run the bundled offer/rejection campaign locally (outbox under ./demo)
	$(BIN)/mailmatrix run examples/offer-letters/recipients.csv --workdir $(DEMO_WORKDIR)

test: $(STAMP) $(VENV)/checkov/bin/checkov ## Run exactly what CI runs: lint, types, the whole test suite
	$(MAKE) --no-print-directory check

# Not part of `make test` (CI time): each suite takes as long as `make unit`.
test-pythons: ## Run the test suite on Python 3.12 and 3.13 (those found here), not in CI
	bash tools/test-pythons.sh $(PYTHONS)

# checkov pins its own boto3, so it lives in a venv of its own (see the script).
$(VENV)/checkov/bin/checkov: infra/install-checkov.sh
	bash infra/install-checkov.sh

check: lint types unit

lint: $(STAMP)
	$(BIN)/ruff check mailmatrix functions tests bench tools examples infra
	$(BIN)/ruff format --check mailmatrix functions tests bench tools examples infra

types: $(STAMP)
	$(BIN)/mypy mailmatrix functions

unit: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP) ## Print the speed and memory figures, measured side by side in one run
	$(BIN)/python -m bench

mailcheck: $(STAMP) ## Score the example campaign's messages with SpamAssassin
	bash tools/mailcheck.sh

deploy: $(STAMP) ## Build and deploy the SAM stack (guided the first time)
	bash infra/deploy.sh

# Only what this repository's targets make, named here: never a folder given on the command line.
clean: ## Remove .venv, ./demo (the demo's workdir) and caches
	rm -rf .venv demo .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
