#!/usr/bin/env bash
# `make reliability`: the reliability suites at full size against the emulator (started if none
# answers, stopped afterwards if this started it). `make test` runs each smaller.
#   races: BATON_RACE_TRIALS (500) trials of each race;
#   model: BATON_MODEL_SEQUENCES (100,000) sequences of the model-based test;
#   bad input: BATON_FUZZ_CASES (5,000) cases per property;
#   chaos: CHAOS_TASKS (1,000) tasks through a stack deployed with BATON_CHAOS.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_emulator
cleanup() { if [ -n "$emulator_started" ]; then "$ROOT/localstack/stop.sh"; fi; }
trap cleanup EXIT
cd "$ROOT"
BATON_RACE_TRIALS="${BATON_RACE_TRIALS:-500}" cargo test -p baton-tests --test emulator races:: -- --nocapture
BATON_MODEL_SEQUENCES="${BATON_MODEL_SEQUENCES:-100000}" \
  cargo test --release -p baton-app --test model -- --nocapture
BATON_FUZZ_CASES="${BATON_FUZZ_CASES:-5000}" cargo test -p baton-tests --test emulator bad_input::
cargo test -p baton-tests --test emulator sdk_faults::
CHAOS_TASKS="${CHAOS_TASKS:-1000}" "$ROOT/localstack/chaos.sh"
