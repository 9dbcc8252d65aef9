# keel: `make run` serves on 127.0.0.1:8000, `make test` runs the whole gate.
# Needs only python3 (3.11+): uv is installed from PyPI with pinned hashes,
# everything else from uv.lock.

PYTHON ?= python3
TOOLS  := .tools
VENV   := .venv
UV     := $(TOOLS)/bin/uv
BIN    := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Bytecode is compiled once at install: with PYTHONDONTWRITEBYTECODE set (as on many
# machines and images) nothing is cached at run time, and every gunicorn worker would
# compile every dependency again at each boot.
export UV_COMPILE_BYTECODE := 1

.PHONY: run test lint install check bench clean sbom

$(UV): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-tools.txt
	touch $@

# Makefile is a prerequisite: a change in how the environment is installed re-syncs it.
$(VENV)/.synced: uv.lock pyproject.toml Makefile $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.synced

# Without a configured signing key, keel serve makes var/dev-signing-keys.json once and
# gives it to every worker.
run: install
	$(BIN)/keel db upgrade
	exec $(BIN)/keel serve

lint: install
	$(BIN)/ruff check src tests bench scripts examples
	$(BIN)/ruff format --check src tests bench scripts examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -X dev -m pytest
	cd examples/notes && $(abspath $(BIN))/python -X dev -m pytest

# A CycloneDX SBOM of what the product installs, from the lock file (no dev dependencies).
sbom: install
	$(UV) export --frozen --no-dev --no-emit-project --format requirements-txt -q > $(VENV)/requirements.lock.txt
	$(BIN)/cyclonedx-py requirements $(VENV)/requirements.lock.txt --pyproject pyproject.toml \
		--mc-type application --of JSON --output-reproducible -o sbom.cdx.json

check: install
	$(BIN)/keel check

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .hypothesis
