#!/usr/bin/env bash
# The chaos run: deploys a stack of its own (stage `test`) whose functions inject faults
# (BATON_CHAOS: lost SDK responses, handled messages delivered again, processes killed before a
# batch is acknowledged), runs CHAOS_TASKS tasks through it (tests/src/bin/chaos.rs) and removes
# it. Needs a running emulator. `make reliability` runs 1,000 tasks; `make test` fewer.
set -euo pipefail
source "$(dirname "$0")/env.sh"
STACK="baton-chaos-$(date +%s)-$RANDOM"
export BATON_CHAOS="${BATON_CHAOS:-lose=0.1,duplicate=0.1,crash=0.02}"
# Deliveries a message may take before SQS parks it: room for the injected failures.
export BATON_MAX_RECEIVE_COUNT="${BATON_MAX_RECEIVE_COUNT:-10}"
trap '"$ROOT/localstack/destroy.sh" "$STACK" || true' EXIT
"$ROOT/localstack/deploy.sh" "$STACK" test
status=0
BATON_STACK_OUTPUTS="$BUILD/$STACK.outputs.json" cargo run --quiet -p baton-tests --bin chaos || status=$?
# What the functions injected, counted in their CloudWatch logs.
count() {
  local total=0 group n
  for group in $("$AWS" logs describe-log-groups --log-group-name-prefix "/aws/lambda/$STACK-" \
      --query 'logGroups[].logGroupName' --output text); do
    n=$("$AWS" logs filter-log-events --log-group-name "$group" --filter-pattern "\"$1\"" \
      --query 'length(events)' --output text)
    total=$((total + n))
  done
  echo "$total"
}
echo "  faults injected: lost SDK responses $(count 'injected fault'), handled messages delivered" \
  "again $(count 'will be delivered again'), processes killed before acknowledging $(count 'chaos: killed')"
exit "$status"
