# The two commands of the README, and the steps they are made of.
# `make run`: the service, dashboard and 2 workers on SQLite, with the example search queued.
# `make test`: lint, types and the whole test suite.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 2
PYTEST_WORKERS ?= 3
STAMP := $(VENV)/.installed

.PHONY: run test install lint typecheck pytest clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstalled whenever the project's metadata or the lock changes.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The example is queued by the service itself once it listens: a second `make run` whose
# port is taken stops there, and queues nothing into the server already on it.
run: install
	$(BIN)/caviar serve --host $(HOST) --port $(PORT) --workers $(WORKERS) --submit examples/moons.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy trainer service worker tests

# In parallel processes (pytest-xdist); PYTEST_WORKERS=0 runs it in this one.
pytest: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test: lint typecheck pytest

# Refresh the lock from a fresh resolution (developers only; commit the result).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -e '.[test]'
	{ echo '# Pinned versions of every package the tests need: `make install` installs within these.'; \
	  echo '# Regenerate with `make lock` after changing dependencies in pyproject.toml.'; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v '^caviar'; } > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
