#!/usr/bin/env bash
# The task-graph benchmark: starts MiniStack if none answers (and stops it afterwards if it started
# it), then seeds a fresh sandbox table and measures provenance lookups and lineage walks.
# Sizes: BENCH_PROVENANCE (default 100000), BENCH_GRAPH (1000), BENCH_LOOKUPS (500).
set -euo pipefail
source "$(dirname "$0")/env.sh"
started=""
if ! curl -fsS -m 2 "$AWS_ENDPOINT_URL/_ministack/health" >/dev/null 2>&1 \
  && ! curl -fsS -m 2 "$AWS_ENDPOINT_URL/_localstack/health" >/dev/null 2>&1; then
  "$ROOT/localstack/start.sh"
  started=yes
fi
cleanup() { if [ -n "$started" ]; then "$ROOT/localstack/stop.sh"; fi; }
trap cleanup EXIT
cd "$ROOT" && cargo run --quiet -p baton-tests --bin bench-graph
