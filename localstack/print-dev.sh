#!/usr/bin/env bash
# Prints how to use the dev stack $1: the dashboard and GraphQL URLs, an event to paste, where the logs are.
set -euo pipefail
source "$(dirname "$0")/env.sh"
STACK="${1:?usage: print-dev.sh STACK}"
stack_urls "$STACK"
BUS=$(stack_output "$STACK" BusName)
TOKEN=$(cd "$ROOT" && cargo run --quiet -p baton-graphql --bin baton-token -- acme developer --admin)
cat <<MSG

Baton is running in the emulator (stack $STACK).

  Dashboard (open in a browser, sign in with the token below):
    $DASHBOARD_URL
  GraphQL (POST) and GraphiQL (GET, open in a browser):
    $GRAPHQL_URL
  Subscriptions (graphql-transport-ws; send the token in connection_init):
    $WEBSOCKET_URL

  A bearer token for tenant acme with the baton:admin scope (12 hours; \`make token TENANT=other\`
  mints more):
    TOKEN=$TOKEN

  Submit a task over GraphQL:
    curl -s -X POST '$GRAPHQL_URL' -H 'content-type: application/json' -H "authorization: Bearer \$TOKEN" \\
      -d '{"query":"mutation { submitTask(input: {projectId: \\"demo\\", name: \\"hello\\", tier: \\"gpu\\"}) { id status } }"}'

  Or put an event on the bus (localstack/env.sh sets the emulator's address and test credentials,
  and makes \`aws\` the pinned CLI pointed at it):
    source localstack/env.sh
    aws events put-events --entries '[{"EventBusName":"$BUS","Source":"acme.app","DetailType":"SubmitTask","Detail":"{\\"tenant\\":\\"acme\\",\\"project\\":\\"demo\\",\\"name\\":\\"hello\\",\\"tier\\":\\"gpu\\"}"}]'

  Function logs (one log group per function: submit, on-due, on-result, cancel, rollback, sweeper, graphql, notifier, counter, http-executor, setup):
    aws logs filter-log-events --log-group-name /aws/lambda/$STACK-on-due --query 'events[].message' --output text
  Emulator log: .build/ministack.log

MSG
