#!/usr/bin/env bash
# Stops the MiniStack that start.sh started (an emulator started elsewhere is left alone).
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ -f "$BUILD/ministack.pid" ]; then
  pid=$(cat "$BUILD/ministack.pid")
  kill "$pid" 2>/dev/null && echo "stopped MiniStack ($pid)" || true
  rm -f "$BUILD/ministack.pid"
fi
