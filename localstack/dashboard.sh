#!/usr/bin/env bash
# Writes the dashboard for stack $1 (in the emulator) as a static page: $2/index.html. Host it
# from an origin the stack allows (`BATON_DASHBOARD_ORIGINS=http://localhost:8080 make dev`), e.g.
# `python3 -m http.server 8080 -d $2`. For a stack on AWS run the same binary with the stack's
# GraphqlUrl and WebSocketUrl outputs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
STACK="${1:?usage: dashboard.sh STACK OUT_DIR}"
OUT="${2:?usage: dashboard.sh STACK OUT_DIR}"
stack_urls "$STACK"
cd "$ROOT" && cargo run --quiet -p baton-graphql --bin baton-dashboard -- "$GRAPHQL_URL" "$WEBSOCKET_URL" "$OUT"
