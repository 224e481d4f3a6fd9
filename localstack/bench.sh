#!/usr/bin/env bash
# `make bench`: builds the functions for release (native binaries for the deployed stack and the
# cold-start runs; arm64 zips with cargo-lambda for their size), starts MiniStack if none answers
# (and stops it afterwards if it started it), deploys a stack of the release binaries under a
# unique name, runs the benchmark and removes the stack.
#
#   localstack/bench.sh           the full run: figures in the table and target/bench/report.json
#   localstack/bench.sh --quick   a smoke run for CI: small sizes, dev binaries already built by
#                                 the tests, no arm64 packaging (sizes show as "-"); no figure is
#                                 asserted
set -euo pipefail
source "$(dirname "$0")/env.sh"
QUICK=""
if [ "${1:-}" = "--quick" ]; then QUICK=--quick; fi
if [ -n "$QUICK" ]; then PROFILE=dev; BINARIES="$ROOT/target/debug"; else PROFILE=release; BINARIES="$ROOT/target/release"; fi
STACK="baton-bench-$(date +%s)-$RANDOM"

if [ -z "$QUICK" ]; then
  echo "packaging every function for arm64 (cargo-lambda, release)"
  "$ROOT/.venv/bin/pip" install --quiet -r "$ROOT/infra/package-requirements.txt"
  "$ROOT/infra/package.sh"
fi

ensure_emulator
cleanup() {
  "$ROOT/localstack/destroy.sh" "$STACK" || true
  if [ -n "$emulator_started" ]; then "$ROOT/localstack/stop.sh"; fi
}
trap cleanup EXIT

BATON_PROFILE="$PROFILE" "$ROOT/localstack/deploy.sh" "$STACK" bench
export BATON_STACK_OUTPUTS="$BUILD/$STACK.outputs.json" BENCH_BINARIES="$BINARIES"
if [ -z "$QUICK" ]; then export BENCH_PACKAGES="$BUILD/package"; fi
cd "$ROOT" && cargo run --quiet --profile "$PROFILE" -p baton-tests --bin bench -- $QUICK
