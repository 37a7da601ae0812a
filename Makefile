# agentflow: `make demo` runs the demo on the embedded default; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test bench lint services browser compose clean

$(STAMP): pyproject.toml
	bash scripts/bootstrap.sh "$(PYTHON)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	rm -f $(VENV)/.installed-*; touch $(STAMP)

demo: $(STAMP)  ## SQLite + in-process worker: no services needed
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py demo $(DEMO_ARGS)

services:  ## start PostgreSQL, Redis and RabbitMQ on 127.0.0.1 if they are not running
	bash scripts/services.sh

browser:  ## install Debian's Chromium for the browser tests if it is missing
	bash scripts/browser.sh

compose:  ## install a Compose that validates docker-compose.yml if there is none
	bash scripts/compose.sh

test: $(STAMP) services browser compose  ## the whole suite: real workers, PostgreSQL, Redis, RabbitMQ, Chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) services  ## ratios and goals against raw INSERTs, raw Celery and DBOS
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf var .pytest_cache
