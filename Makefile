# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo

.PHONY: run test soak bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	@test -d $(DEMO) || $(BIN)/boomerang init $(DEMO)
	cd $(DEMO) && ../$(BIN)/boomerang run

test: $(VENV)/.installed-test
	$(BIN)/ruff check core plugins tests bench
	$(BIN)/python -m pytest -q --durations=15

# The reliability tests' long forms (tests/reliability/soak.py): more kills, examples, messages.
soak: $(VENV)/.installed-test
	BOOMERANG_SOAK=1 $(BIN)/python -m pytest -q --durations=15 tests/reliability

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
