#!/usr/bin/env bash
# The emulator tests: starts MiniStack if none answers (and stops it afterwards if it started it),
# deploys a stack with a unique name, runs the in-process, end-to-end and browser tests, removes the stack,
# then the chaos run at a reduced size on a stack of its own.
set -euo pipefail
source "$(dirname "$0")/env.sh"
STACK="baton-test-$(date +%s)-$RANDOM"

ensure_emulator
cleanup() {
  "$ROOT/localstack/destroy.sh" "$STACK" || true
  if [ -n "$emulator_started" ]; then "$ROOT/localstack/stop.sh"; fi
}
trap cleanup EXIT

# The browser tests serve the dashboard's static build from this origin, too.
export BATON_STATIC_PORT="${BATON_STATIC_PORT:-4599}"
BATON_DASHBOARD_ORIGINS="http://127.0.0.1:$BATON_STATIC_PORT" "$ROOT/localstack/deploy.sh" "$STACK" test
export BATON_STACK_OUTPUTS="$BUILD/$STACK.outputs.json"
cd "$ROOT" && cargo test -p baton-tests --tests
"$ROOT/localstack/browser.sh" "$STACK"
# The chaos run at a reduced size, on a stack of its own (`make reliability`: 1,000 tasks).
CHAOS_TASKS="${CHAOS_TASKS:-100}" "$ROOT/localstack/chaos.sh"
