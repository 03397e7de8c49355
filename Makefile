# One task runner for developers and CI. `make dev` and `make test` work from a fresh clone:
# they create .venv, install the project, fetch the Kafka jars (Maven Central, cached), then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help install kafka-jars tools dev test lint typecheck format bench bench-quick bench-soak bench-sync bench-android bench-tools schema fuzz clean

help:
	@echo "make dev        run the local stack: Kafka + simulators + broker, with traffic"
	@echo "make test       lint, type-check and run the whole test suite against a real Kafka"
	@echo "make lint       ruff + import-linter layers;  make typecheck: mypy --strict"
	@echo "make schema     regenerate docs/schema and docs/configuration.md from the models"
	@echo "make bench      run the benchmarks beside their peers (results in bench/results/)"
	@echo "make bench-quick  the same in < 2 minutes (smoke run);  make bench-soak: RSS under load"
	@echo "make bench-sync request cost of Apple syncs (bench/results/apple_sync_cost.json)"
	@echo "make fuzz       fuzz the Apple webhook against a real Kafka (FUZZ_EXAMPLES=1000000)"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

kafka-jars: install
	$(BIN)/python -m broker.devtools.devkafka fetch

tools:
	bash scripts/ensure-tools.sh

dev: install kafka-jars
	$(BIN)/mdm-broker dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schema: install
	$(BIN)/python -m broker.app.gendocs docs

# pytest exits 5 when it collected nothing: say so plainly instead of passing or failing silently.
test: install kafka-jars tools bench-tools lint typecheck
	@rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected for '$(PYTEST_ARGS)' (exit 5)" >&2; fi; \
	exit $$rc

PEERS := bench/peers/.venv

# wrk (Debian package) and the FastAPI peer's own virtualenv (pinned in bench/peers/requirements.txt).
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { echo "installing Debian package wrk ..." >&2; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }; }
	@test -x $(PEERS)/bin/uvicorn || { $(PYTHON) -m venv $(PEERS) && \
	  $(PEERS)/bin/pip install -q -r bench/peers/requirements.txt; }

# The full run (~15 min on 2 cores): prints a table, writes bench/results/latest.json.
bench: install kafka-jars bench-tools
	$(BIN)/python -m bench.run

# The same harness, small and short (< 2 min): a smoke check, not numbers to quote.
bench-quick: install kafka-jars bench-tools
	$(BIN)/python -m bench.run --quick --out bench/results/quick.json

# Google Play EMM at 5,000 notifications/s offered (sets up to 1,000), simulator in its own process:
# missed ack deadlines, arrival -> ack latency; EMM_ROUNDS runs of EMM_S seconds, medians.
bench-android: install kafka-jars
	$(BIN)/python -m bench.android --rate $${EMM_RATE:-5000} --seconds $${EMM_S:-30} --rounds $${EMM_ROUNDS:-3}

# RSS of the broker under sustained wrk -c32 load; SOAK_S seconds (default 600), slope reported.
bench-soak: install kafka-jars bench-tools
	$(BIN)/python -m bench.soak --seconds $${SOAK_S:-600}

# The CI suite runs the same test with 150 examples; this is the long run (hours at ~35 inputs/s).
FUZZ_EXAMPLES ?= 1000000
fuzz: install kafka-jars
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz -q -o timeout=0 -p no:cacheprovider

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache deploy/kafka/target

bench-sync: install kafka-jars
	$(BIN)/python -m bench.apple_sync
