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
# OpenMMLab users have. Its job runs the tests of what differs between the stacks (README "Compatibility"):
# the models and layers (clustering, attention, autocast, checkpointing on torch 2.1), checkpoint loading and
# conversion, the toolbox registrations, configs and APIs, the runner set-up, demo data and drawing (numpy 1),
# packaging, and the trainings, resume and bf16 training. The rest (benchmark scripts and the GPU check,
# ONNX deployment, layout and exports, the tools' options) runs on the pinned stack only: it holds no code
# that depends on the torch or numpy version. Tests that need a newer torch skip with the version they need.
OLDEST_VENV ?= $(CURDIR)/.venv-torch2.1
OLDEST_TESTS ?= tests/test_models tests/test_utils tests/test_engine tests/test_configs tests/test_testing \
	tests/test_visualization tests/test_apis/test_checkpoint_conversion.py tests/test_apis/test_inference.py \
	tests/test_registry.py tests/test_toolbox_stack.py tests/test_stack_drift.py tests/test_packaging.py
OLDEST_SLOW_TESTS ?= tests/test_tools/test_train_and_test.py::test_train_then_test_produces_the_metric \
	tests/test_tools/test_train_and_test.py::test_resume_continues_from_the_checkpoint_iteration \
	tests/test_tools/test_amp_and_layer_decay.py::test_bf16_config_trains_on_cpu_with_float32_clustering

env:
	bash tools/bootstrap.sh

test: env lint
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

env-oldest:
	BOAT_MM_TORCH=2.1.2 VENV=$(OLDEST_VENV) bash tools/bootstrap.sh

test-oldest: env-oldest
	@echo "[test-oldest] the stack-dependent tests (Makefile OLDEST_TESTS, OLDEST_SLOW_TESTS); the others run on the pinned stack only"
	$(OLDEST_VENV)/bin/python -m pytest $(OLDEST_TESTS) -m "not slow"
	$(OLDEST_VENV)/bin/python -m pytest $(OLDEST_SLOW_TESTS)

lint: env
	$(PYTHON) -m ruff check .

demo: env
	$(PYTHON) tools/demo.py

clean:
	rm -rf work_dirs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
