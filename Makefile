# The two commands of the README: `make setup && make train`, and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0: the CPU build lies on this project's machines; elsewhere pip picks the platform's build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup train test acceptance lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,sweep,video]"
	touch $@

train: setup
	$(BIN)/python train.py

# two pytest workers: most tests wait on one single-threaded training process at a time
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# every README/docs command line, run as a user types it (tests/command_registry.py)
acceptance: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m acceptance tests/test_documented_commands.py

lint: setup
	$(BIN)/ruff check src tests bench *.py

# the recorded fixtures the data and demo parts read (a dev checkout keeps them beside the repository)
FIXTURES ?= ../shared/fixtures

# not echoed: standard output is the JSON alone (make bench > figures.json)
bench: setup
	@$(BIN)/python -m bench --fixtures $(FIXTURES)

clean:
	rm -rf logs outputs multirun .pytest_cache
