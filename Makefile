SHELL := bash
.DEFAULT_GOAL := help
.PHONY: help test check demo bench build watch invoke-ingest invoke-transform invoke-load clean

# Runs a command with PostgreSQL and a local S3 API started if need be (see scripts/env.sh).
WITH_SERVICES := scripts/env.sh
ARCH ?= x86_64
# The crates that are Lambdas (each builds a binary of its own name).
LAMBDAS := ingest transform load
LAMBDA := PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-15s %s\n", $$1, $$2}'

test: check ## Lint, then run every test against a real PostgreSQL and a local S3 API
	$(WITH_SERVICES) cargo test --workspace

check: ## cargo fmt --check and clippy -D warnings
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

demo: ## Run the pipeline end to end on generated data (DEMO_SCALE=1)
	$(WITH_SERVICES) scripts/demo.sh

bench: ## Ingest, transform and load throughput and peak memory beside raw COPY (BENCH_SCALE=21, about 1M rows)
	$(WITH_SERVICES) scripts/bench.sh

build: ## Build the Lambdas as zips for AWS (ARCH=arm64 for Graviton)
	scripts/venv.sh requirements-lambda.txt
	$(LAMBDA) build --release --output-format zip $(if $(filter arm64,$(ARCH)),--arm64,--x86-64) \
	  $(addprefix -p ,$(LAMBDAS))

watch: ## Serve the Lambdas locally behind the runtime emulator (configure with env vars)
	scripts/venv.sh requirements-lambda.txt
	$(LAMBDA) watch

invoke-ingest: ## Invoke the locally watched ingest with events/ingest-all.json
	$(LAMBDA) invoke ingest --data-file events/ingest-all.json

invoke-transform: ## Invoke the locally watched transform with events/transform-ingest-output.json
	$(LAMBDA) invoke transform --data-file events/transform-ingest-output.json

invoke-load: ## Invoke the locally watched load with events/load-transform-output.json
	$(LAMBDA) invoke load --data-file events/load-transform-output.json

clean: ## Remove build output, the venv and leftover local clusters
	cargo clean
	rm -rf .build .venv
