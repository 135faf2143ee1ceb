# The two commands (see README.md):
#   make demo   set everything up, then run the whole LAPA pipeline on built-in simulated data
#   make test   set everything up, then run the whole test suite
# Everything that can start ROS keeps its traffic on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1
VENV ?= .venv
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/lapa demo $(DEMO_ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
