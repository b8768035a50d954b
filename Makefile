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

.PHONY: env env-oldest lint test test-oldest demo clean

# The oldest tested stack (torch 2.1.2, numpy 1.26, mmcv 2.1.0 built from its sdist): the environment
# OpenMMLab users have. Its job runs every quick test and the trainings, resume and converters; tests that
# need a newer torch skip with the version they need (README "Compatibility").
OLDEST_VENV ?= $(CURDIR)/.venv-torch2.1
OLDEST_SLOW_TESTS ?= tests/test_tools/test_train_and_test.py::test_train_then_test_produces_the_metric \
	tests/test_tools/test_train_and_test.py::test_resume_continues_from_the_checkpoint_iteration

env:
	bash tools/bootstrap.sh

test: env lint
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

env-oldest:
	BOAT_MM_TORCH=2.1.2 VENV=$(OLDEST_VENV) bash tools/bootstrap.sh

test-oldest: env-oldest
	$(OLDEST_VENV)/bin/python -m pytest tests -m "not slow"
	$(OLDEST_VENV)/bin/python -m pytest $(OLDEST_SLOW_TESTS)

lint: env
	$(PYTHON) -m ruff check .

demo: env
	$(PYTHON) tools/demo.py

clean:
	rm -rf work_dirs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
