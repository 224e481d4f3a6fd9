# Baton: `make dev` runs the whole stack in the emulator, `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
DEV_STACK ?= baton-local

.PHONY: dev demo dashboard test lint template check-domain unit sdl token package bench bench-quick reliability emulator stop undeploy clean

## dev: start the emulator if none answers, build and deploy every function as stage `local`
dev: $(VENV)/.installed
	./localstack/start.sh
	./localstack/deploy.sh $(DEV_STACK) local
	./localstack/print-dev.sh $(DEV_STACK)

## demo: against the running `make dev` stack, a small workload of HTTP tasks through the built-in
## executor (echo server on loopback, some failing, a dependency chain), with progress and a summary
demo:
	source localstack/env.sh && BATON_STACK_OUTPUTS="$$PWD/.build/$(DEV_STACK).outputs.json" \
		cargo run --quiet -p baton-tests --bin demo

## dashboard: the dashboard of the dev stack as a static page, .build/dashboard/index.html, to host
## apart from the API (the gateway serves it at `/` either way; see localstack/dashboard.sh)
dashboard: $(VENV)/.installed
	./localstack/dashboard.sh $(DEV_STACK) .build/dashboard

## test: formatting, lints, the domain purity check, unit tests, then the emulator tests
test: $(VENV)/.installed lint template check-domain unit
	./localstack/test.sh

## lint: rustfmt and clippy, warnings are errors
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

## template: lint infra/template.yaml with cfn-lint (pinned in localstack/requirements.txt)
template: $(VENV)/.installed
	$(VENV)/bin/cfn-lint infra/template.yaml

## check-domain: the domain and application crates must not depend on AWS or Lambda, and no
## function's build carries the test fault layers
check-domain:
	@offenders=$$(cargo tree -p baton-domain -p baton-app -e normal --prefix none \
		| grep -E '^(aws-|aws_|lambda)' | sort -u); \
	if [ -n "$$offenders" ]; then \
		echo "baton-domain/baton-app must stay free of AWS and Lambda crates, found:"; \
		echo "$$offenders"; exit 1; \
	fi; echo "domain and application crates are free of AWS and Lambda dependencies"
	@for f in $$(cat infra/functions); do \
		if cargo tree -p baton-fn-$$f -e features -i baton-aws -i baton-app 2>/dev/null \
			| grep -qE 'feature "(testing|chaos)"'; then \
			echo "baton-fn-$$f is built with test faults"; exit 1; \
		fi; \
	done; echo "no function is built with test faults (features testing, chaos)"

## unit: every test that needs no emulator
unit:
	cargo test --workspace --exclude baton-tests --all-targets

## sdl: write the schema's SDL to schema.graphql (a unit test fails while they differ)
sdl:
	BATON_UPDATE_SDL=1 cargo test --quiet -p baton-graphql --test sdl

## package: build every function for Lambda on arm64 (cargo-lambda) into .build/package/{function}.zip
package: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -r infra/package-requirements.txt
	./infra/package.sh

## bench: release build, then every figure side by side in one run against the emulator: AWS
## calls and $ per million lifecycles, throughput against the emulator's ceiling, latency through
## API Gateway, cold init, arm64 package size, peak memory, task-graph lookups. Prints a table
## and writes target/bench/report.json. Sizes: BENCH_TASKS, BENCH_CONCURRENCY, ... (see
## tests/src/bin/bench/main.rs)
bench: $(VENV)/.installed
	./localstack/bench.sh

## bench-quick: the same stages at small sizes on the dev build, as CI runs them (no figure is
## asserted)
bench-quick: $(VENV)/.installed
	./localstack/bench.sh --quick

## reliability: the reliability suites at full size against the emulator: races (500 trials
## each), the model-based test (100,000 sequences), the bad-input fuzz (5,000 cases per
## property), SDK faults, and the chaos run (1,000 tasks). `make test` runs each smaller.
## The cargo-fuzz targets are in fuzz/ (nightly: `cd fuzz && cargo +nightly fuzz run events`).
reliability: $(VENV)/.installed
	./localstack/reliability.sh

## token: mint a bearer token for the local stage, e.g. `make token TENANT=acme` (`ADMIN=1`: with
## the baton:admin scope, for the global kill switch)
TENANT ?= acme
ADMIN ?=
token:
	@source localstack/env.sh && cargo run --quiet -p baton-graphql --bin baton-token -- $(TENANT) $(if $(ADMIN),--admin)

emulator: $(VENV)/.installed
	./localstack/start.sh

stop:
	./localstack/stop.sh

## undeploy: remove the dev stack
undeploy: $(VENV)/.installed
	./localstack/destroy.sh $(DEV_STACK)

clean: stop
	rm -rf .build target

$(VENV)/.installed: localstack/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r localstack/requirements.txt
	touch $@
