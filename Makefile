SHELL := bash
.DEFAULT_GOAL := help
.PHONY: help test check docs demo bench chaos fuzz build watch invoke-ingest invoke-transform invoke-load \
  plan deploy destroy clean

# Runs a command with PostgreSQL and a local S3 API started if need be (see scripts/env.sh).
WITH_SERVICES := scripts/env.sh
ARCH ?= x86_64
# The crates that are Lambdas (each builds a binary of its own name).
LAMBDAS := ingest transform load
LAMBDA := PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda
# Extra files for the zips, e.g. LAMBDA_INCLUDE=global-bundle.pem (see db_ssl_root_cert).
LAMBDA_INCLUDE ?=
TF := terraform -chdir=terraform
TF_VARS := -var lambda_architecture=$(ARCH)
ZIPS := $(foreach f,$(LAMBDAS),target/lambda/$(f)/bootstrap.zip)
# Where the state lives (it holds the database passwords): TF_BACKEND_CONFIG=FILE, the s3
# backend's settings (terraform/backend.hcl.example), or TF_LOCAL_STATE=1 for a local file.
TF_INIT := scripts/terraform-init.sh
CHECK_ZIPS = @for z in $(ZIPS); do test -f $$z || { echo "$$z is missing: run make build first" >&2; exit 1; }; done

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-17s %s\n", $$1, $$2}'

test: ## make check's checks (clippy's lints applied as the tests build), then every test against a real PostgreSQL and local AWS APIs (moto)
	scripts/test.sh

check: ## cargo fmt --check and clippy -D warnings, beside the deployment checks (terraform validate, asl-validator, checkov, zizmor) and the docs' links
	scripts/check.sh

docs: ## Build the documentation (docs/, mdBook) into docs/book and check its links
	scripts/docs.sh

demo: ## Run the pipeline end to end on generated data (DEMO_SCALE=1)
	$(WITH_SERVICES) scripts/demo.sh

bench: ## Ingest, transform and load throughput and peak memory beside raw COPY (BENCH_SCALE=21, about 1M rows)
	$(WITH_SERVICES) scripts/bench.sh

SEED ?= 1
RUNS ?= 3
chaos: ## Seeded fault runs over a ~240k-row source (SEED=1 RUNS=3; CHAOS_SCALE, CHAOS_EXECUTIONS)
	$(WITH_SERVICES) env CHAOS_SEED=$(SEED) CHAOS_RUNS=$(RUNS) \
	  cargo test --release -p totesys-tests --test chaos -- --ignored --nocapture chaos

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := events raw_parquet copy_values
# cargo-fuzz asks for nightly's -Z flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
fuzz: ## Fuzz the event parsers, the raw Parquet reader and COPY decoding, FUZZ_SECONDS each (cargo-fuzz)
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

build: ## Build the Lambdas as zips for AWS (ARCH=arm64 for Graviton)
	scripts/venv.sh requirements-lambda.txt
	$(LAMBDA) build --release --output-format zip $(if $(filter arm64,$(ARCH)),--arm64,--x86-64) \
	  $(addprefix --include ,$(LAMBDA_INCLUDE)) $(addprefix -p ,$(LAMBDAS))

watch: ## Serve the Lambdas locally behind the runtime emulator (configure with env vars)
	scripts/venv.sh requirements-lambda.txt
	$(LAMBDA) watch

invoke-ingest: ## Invoke the locally watched ingest with events/ingest-all.json
	$(LAMBDA) invoke ingest --data-file events/ingest-all.json

invoke-transform: ## Invoke the locally watched transform with events/transform-ingest-output.json
	$(LAMBDA) invoke transform --data-file events/transform-ingest-output.json

invoke-load: ## Invoke the locally watched load with events/load-transform-output.json
	$(LAMBDA) invoke load --data-file events/load-transform-output.json

plan: ## terraform plan against your AWS account (TF_BACKEND_CONFIG=FILE or TF_LOCAL_STATE=1; ARCH as for build)
	$(TF_INIT) >/dev/null
	$(CHECK_ZIPS)
	$(TF) plan -input=false $(TF_VARS)

deploy: ## terraform apply of the zips from make build (as plan; AUTO_APPROVE=1 for CI)
	$(TF_INIT) >/dev/null
	$(CHECK_ZIPS)
	$(TF) apply $(TF_VARS) $(if $(AUTO_APPROVE),-auto-approve)

destroy: ## terraform destroy (as plan; the buckets must be emptied first, the lock table is protected)
	$(TF_INIT) >/dev/null
	$(TF) destroy $(TF_VARS)

clean: ## Remove build output, the venvs, the checks' node_modules and leftover local clusters
	cargo clean
	rm -rf .build .venv .venv-check tools/asl/node_modules fuzz/target docs/book
