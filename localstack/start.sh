#!/usr/bin/env bash
# Starts MiniStack on 127.0.0.1 unless an emulator already answers at $AWS_ENDPOINT_URL, then waits
# until it is healthy.
set -euo pipefail
source "$(dirname "$0")/env.sh"

if emulator_healthy; then
  echo "emulator already running at $AWS_ENDPOINT_URL"
  exit 0
fi
echo "starting MiniStack on 127.0.0.1:$BATON_EMULATOR_PORT (log: $BUILD/ministack.log)"
BIND_HOST=127.0.0.1 GATEWAY_PORT="$BATON_EMULATOR_PORT" LOG_LEVEL="${MINISTACK_LOG_LEVEL:-WARNING}" \
  nohup "$ROOT/.venv/bin/ministack" >"$BUILD/ministack.log" 2>&1 &
echo $! >"$BUILD/ministack.pid"
for _ in $(seq 1 60); do
  if emulator_healthy; then echo "MiniStack is up"; exit 0; fi
  sleep 0.5
done
echo "MiniStack did not become healthy; last log lines:" >&2
tail -20 "$BUILD/ministack.log" >&2
exit 1
