# The two entry points (README): `make demo` and `make test`.
# Both bring the local stack up first (installing it on first use).
SHELL := /bin/bash
# The runtime goes through PgBouncer's transaction pool (deploy/pgbouncer.sh);
# the relay lease needs a session of its own (a session-mode pool), and
# migrations go straight to Postgres.
export DATABASE_URL ?= postgres://novyra_app:novyra_app@127.0.0.1:6432/novyra
export DATABASE_SESSION_URL ?= postgres://novyra_app:novyra_app@127.0.0.1:6432/novyra_session
export MIGRATION_DATABASE_URL ?= postgres://novyra_migrator:novyra_migrator@127.0.0.1:5432/novyra
export KAFKA_BROKERS ?= 127.0.0.1:9092
export SCHEMA_REGISTRY_URL ?= http://127.0.0.1:8081/apis/ccompat/v7
export NEO4J_URI ?= 127.0.0.1:7687
export NEO4J_USER ?= neo4j
export NEO4J_PASSWORD ?= novyra-dev-password
export RUST_LOG ?= info,rdkafka=warn
CARGO ?= cargo

.PHONY: demo test bench bench-scale chaos stack-up stack-down stack-status build lint interop-venv schema-check

stack-up:
	bash deploy/stack.sh up

stack-down:
	bash deploy/stack.sh down

stack-status:
	bash deploy/stack.sh status

build:
	$(CARGO) build --release --locked

demo: stack-up build
	./target/release/novyra db migrate
	./target/release/novyra demo --concepts 60 --students 250 --attempts 25000 --rate 5000

# The interop test publishes with Confluent's Python client; it lives in a
# venv under .stack so nothing is installed system-wide.
VENV := .stack/venv
$(VENV)/.installed: tests/interop/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/interop/requirements.txt
	touch $@

interop-venv: $(VENV)/.installed

# Integration tests share the stack but use their own topic prefix, schema
# and ids, so they run in parallel with each other. The outage tests
# (crates/cli/tests/*_outage.rs) stop and restart Postgres, the registry and
# Neo4j for a minute each, so do not run `make test` beside a demo you need.
# FULL=1: the stack with the production topology's extra servers (the
# read replica), which the tests need; `make demo` keeps the lean default.
test: export FULL := 1
test: stack-up interop-venv schema-check
	NOVYRA_PYTHON=$(CURDIR)/$(VENV)/bin/python $(CARGO) test --release --locked --workspace --no-fail-fast

# A seeded, randomized fault schedule against the local stack with an
# independent checker (tests/chaos/chaos.py). CHAOS_SEED=N reproduces a
# run's schedule, CHAOS_MINUTES sets its length (default 10). It stops and
# starts stack services: do not run it beside a demo you need.
chaos: stack-up build interop-venv
	$(VENV)/bin/python tests/chaos/chaos.py

# Ingest throughput, latency at a fixed rate and peak RSS, next to a
# one-row-at-a-time baseline and a binary-COPY ceiling; see docs/benchmarks.md.
bench: stack-up build
	./target/release/novyra-bench

# Ten million attempts from a million students over 5,000 concepts through
# one `novyra run`: rate and memory per tenth of the run, stored sizes, the
# graph, checked against what was published. About 20 minutes and 8 GiB of
# Postgres on 2 cores, so not part of `make bench`; see docs/benchmarks.md.
bench-scale: stack-up build
	./target/release/novyra-bench --only scale

# crates/store/src/schema.rs must equal `diesel print-schema` of a freshly
# migrated schema (`bash deploy/schema.sh generate` rewrites it).
schema-check: stack-up
	bash deploy/schema.sh check

lint: schema-check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
