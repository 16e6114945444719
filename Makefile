# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo

.PHONY: run test soak bench clean

# setuptools warns on every editable install of a package whose folder is not named after it
# (`boomerang` is core/): "Editable installation. Please be careful with folders in your working
# directory with the same name as your package". There is no such folder here, and no setting
# but moving core/ to boomerang/ quiets it (editable_mode=strict warns the same, compat cannot
# map boomerang to core/), so the installs below ignore that one message.
PIP_QUIET_EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_QUIET_EDITABLE) $(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP_QUIET_EDITABLE) $(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	@test -d $(DEMO) || $(BIN)/boomerang init $(DEMO)
	cd $(DEMO) && ../$(BIN)/boomerang run

# The site tracking browser test runs headless Chromium (Debian: apt-get install chromium) and the
# 1C-Bitrix module's tests run it with php-cli (php-cli php-curl): installed here when missing and
# possible; without them, those tests say so and are skipped.
test: $(VENV)/.installed-test
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) >/dev/null 2>&1 \
		|| echo "chromium is not installed and could not be (apt-get install chromium): the browser test is skipped"
	@command -v php >/dev/null || apt-get install -y -q php-cli php-curl >/dev/null 2>&1 \
		|| (apt-get update -q && apt-get install -y -q php-cli php-curl) >/dev/null 2>&1 \
		|| sudo -n apt-get install -y -q php-cli php-curl >/dev/null 2>&1 \
		|| echo "php-cli is not installed and could not be (apt-get install php-cli php-curl): the 1C-Bitrix module's tests are skipped"
	$(BIN)/ruff check core plugins tests bench
	$(BIN)/python -m pytest -q -n 4 --dist worksteal --durations=15

# The reliability tests' long forms (tests/reliability/soak.py): more kills, examples, messages.
soak: $(VENV)/.installed-test
	BOOMERANG_SOAK=1 $(BIN)/python -m pytest -q --durations=15 tests/reliability

# The ingest benchmark and the cluster's events/s drive HTTP with wrk (Debian: apt-get install wrk):
# installed here when missing and possible; without it, they say so and are skipped.
bench: $(VENV)/.installed-test
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null 2>&1 \
		|| (apt-get update -q && apt-get install -y -q wrk) >/dev/null 2>&1 \
		|| sudo -n apt-get install -y -q wrk >/dev/null 2>&1 \
		|| echo "wrk is not installed and could not be (apt-get install wrk): the ingest benchmark and the cluster's events/s are skipped"
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
