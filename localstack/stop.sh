#!/usr/bin/env bash
# Stops the MiniStack that start.sh started (an emulator started elsewhere is left alone).
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ -f "$BUILD/ministack.pid" ]; then
  pid=$(cat "$BUILD/ministack.pid")
  kill "$pid" 2>/dev/null && echo "stopped MiniStack ($pid)" || true
  rm -f "$BUILD/ministack.pid"
  # The functions' code it unpacked, one directory per zip it was given (about 60 MB each for the
  # dev build); it removes them only on a reset, so every deploy would leave its own behind.
  rm -rf "${TMPDIR:-/tmp}/ministack-provided-code-${BATON_EMULATOR_PORT}"
fi
