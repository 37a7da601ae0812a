# agentflow: `make demo` runs the demo on the embedded default; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The versions the suite last passed with (`make lock` refreshes it); `make test-latest`
# runs the suite on the newest versions pyproject.toml allows instead.
LOCK   := constraints.txt
EXTRAS := test,bench,openai,anthropic,otel
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
LATEST := .venv-latest
comma  := ,

.PHONY: demo test test-latest lock bench lint services browser compose faketime clean

$(STAMP): pyproject.toml $(LOCK)
	bash scripts/bootstrap.sh "$(PYTHON)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[$(EXTRAS)]"
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

faketime:  ## install libfaketime for the clock-skew tests if it is missing
	bash scripts/faketime.sh

test: $(STAMP) services browser compose faketime  ## the whole suite: real workers, PostgreSQL, Redis, RabbitMQ, Chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-latest: services browser compose faketime  ## the whole suite on the newest versions pyproject.toml allows
	bash scripts/bootstrap.sh "$(PYTHON)"
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[$(EXTRAS)]"
	$(LATEST)/bin/python -m pip list --format=freeze
	$(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

lock: $(STAMP)  ## re-resolve constraints.txt to the newest allowed versions (then run `make test`)
	$(BIN)/python -m pip install --quiet "uv>=0.9,<1"
	$(BIN)/uv pip compile pyproject.toml $(addprefix --extra ,$(subst $(comma), ,$(EXTRAS))) \
	  --universal --python-version 3.11 --upgrade --annotation-style line \
	  --custom-compile-command "make lock" -o $(LOCK)

bench: $(STAMP) services  ## ratios and goals against raw INSERTs, raw Celery and DBOS
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf var .pytest_cache
