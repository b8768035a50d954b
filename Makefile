# boat_mm: the two commands a newcomer types are `make demo` and `make test`.
# Each sets up its environment first (idempotent): ./.venv by default, or VENV=/path/to/env, or
# BOAT_MM_USE_CURRENT_ENV=1 to use the python already on PATH (bring your own environment).
VENV ?= $(CURDIR)/.venv
export VENV
ifeq ($(BOAT_MM_USE_CURRENT_ENV),1)
PYTHON ?= python3
else
PYTHON := $(VENV)/bin/python
endif
PYTEST_ARGS ?=

.PHONY: env lint test demo clean

env:
	bash tools/bootstrap.sh

test: env lint
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

lint: env
	$(PYTHON) -m ruff check .

demo: env
	$(PYTHON) tools/demo.py

clean:
	rm -rf work_dirs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
