# make test: a virtual environment of its own, then ruff, mypy --strict and pytest.
# make demo: the main job on the embedded default, with no account anywhere; the dashboard
# stays up at the end until Ctrl-C (in a terminal).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest demo bench fuzz screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Mutation fuzzing of every provider's signed webhook path into a real store: 100,000 cases
# per provider on SQLite and a tenth of that on PostgreSQL, unless UNIMAILTRACK_FUZZ_CASES and
# UNIMAILTRACK_FUZZ_POSTGRES_CASES say otherwise (UNIMAILTRACK_FUZZ_SEED picks the cases).
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz_webhooks.py

# The demo needs only the SES and web extras: a fresh checkout gets there in seconds, not the
# minute the whole development environment takes.
DEMO_STAMP := $(VENV)/.demo-installed
$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[ses,web]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python -m unimailtrack.demo

# Screenshots of every dashboard screen for docs/dashboard.md, from the real pages in the
# system's headless Chromium (apt-get install chromium chromium-driver).
screenshots: $(STAMP)
	$(BIN)/python docs/screenshots.py

# The benchmarks compare against django-anymail, which lives only in its own environment.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[all,dev,bench]'
	touch $@

# Every figure is a ratio to a reference measured in the same run; see each script's docstring.
# Each writes its targets to bench/.results/; the scorecard prints them all, met or not met.
bench: $(BENCH_VENV)/.installed
	rm -rf bench/.results
	$(BENCH_VENV)/bin/python bench/import_time.py
	$(BENCH_VENV)/bin/python bench/parse.py
	$(BENCH_VENV)/bin/python bench/verify.py
	$(BENCH_VENV)/bin/python bench/send.py
	$(BENCH_VENV)/bin/python bench/http1.py
	$(BENCH_VENV)/bin/python bench/webhook.py
	$(BENCH_VENV)/bin/python bench/ingest.py
	$(BENCH_VENV)/bin/python bench/mailgun_refusal.py
	$(BENCH_VENV)/bin/python bench/suppression.py
	$(BENCH_VENV)/bin/python bench/alerts.py
	$(BENCH_VENV)/bin/python bench/queue
	$(BENCH_VENV)/bin/python bench/scorecard.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
