# Two commands do all set-up: `make demo` runs the demo, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo console test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required (set PYTHON=python3.11)" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nurture demo

# The console on the demo's data (run `make demo` first), until interrupted.
console: $(STAMP)
	env -u DATABASE_URL -u REDIS_URL -u SMTP_URL -u SECRET_KEY -u NURTURE_SINK_DIR \
	  NURTURE_INSTANCE=demo-instance $(BIN)/flask --app wsgi run

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check engine worker qa tests bench

bench: $(STAMP)
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/import_leads.py --rows 100000

clean:
	rm -rf $(VENV) instance demo-instance .pytest_cache
