# The README's two commands: `make run` and `make test`. Both install into .venv/ first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Real medical data (read-only); tests that need it skip with a reason when it is absent.
export MEDROBUST_DATA_DIR ?= $(abspath ../shared/data)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install run demo check test lint reproduce bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# API (uvicorn) + one Celery worker; no server needed (REDIS_URL unset: broker on local disk).
run: $(STAMP)
	$(BIN)/python -m service

# A first model in minutes: small demo models on the staged HAM10000 data, stored where `make run`
# serves from, with the aliases and task the README's examples use (a running API picks them up).
demo: $(STAMP)
	$(BIN)/medrobust quickstart

# Style and types first (seconds), so CI, which runs `make test`, fails on them too.
# The job tests need Redis on 127.0.0.1:6379 (database 15): started here if none answers.
# The PACS tests need Orthanc, orthanc-dicomweb, dcmtk, dicom3tools: installed here when root.
# The web viewer's tests need chromium and chromium-driver: likewise.
test: check
	./scripts/ensure-redis.sh
	./scripts/ensure-pacs-tools.sh
	./scripts/ensure-browser.sh
	$(BIN)/pytest $(PYTEST_ARGS)

# The paper's study on the real data, resumable (rerun the same command after an interruption).
REPRODUCE_CONFIG ?= configs/reproduce-cpu.yaml
reproduce: $(STAMP)
	$(BIN)/medrobust reproduce --config $(REPRODUCE_CONFIG)

LINT_PATHS := training service tests bench

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)

# ruff lint and format (`ruff format` fixes the latter) over LINT_PATHS; mypy over training/ and
# service/ as [tool.mypy] in pyproject.toml says.
check: lint
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
