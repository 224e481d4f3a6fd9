#!/usr/bin/env bash
# `make reliability`: the reliability suites at full size against the emulator (started if none
# answers, stopped afterwards if this started it). `make test` runs them smaller.
# Races: BATON_RACE_TRIALS (default 500) trials of each.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_emulator
cleanup() { if [ -n "$emulator_started" ]; then "$ROOT/localstack/stop.sh"; fi; }
trap cleanup EXIT
export BATON_RACE_TRIALS="${BATON_RACE_TRIALS:-500}"
cd "$ROOT" && cargo test -p baton-tests --test races -- --nocapture
