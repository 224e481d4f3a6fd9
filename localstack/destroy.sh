#!/usr/bin/env bash
# Deletes stack $1 and waits until it is gone.
set -euo pipefail
source "$(dirname "$0")/env.sh"
STACK="${1:?usage: destroy.sh STACK}"
"$AWS" cloudformation delete-stack --stack-name "$STACK"
"$AWS" cloudformation wait stack-delete-complete --stack-name "$STACK"
rm -f "$BUILD/$STACK.outputs.json"
echo "stack $STACK removed"
