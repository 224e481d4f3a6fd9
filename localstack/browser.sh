#!/usr/bin/env bash
# The dashboard's browser tests (tests/browser) against deployed stack $1: installs what they need
# when it is missing (Debian's chromium, playwright-core from the npm registry), mints tokens,
# writes the static build, runs them. Screenshots go to .build/browser/.
#
#   localstack/browser.sh STACK
set -euo pipefail
source "$(dirname "$0")/env.sh"
STACK="${1:?usage: browser.sh STACK}"

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "installing Debian's chromium"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
fi
BROWSER_TESTS="$ROOT/tests/browser"
if [ ! -d "$BROWSER_TESTS/node_modules/playwright-core" ]; then
  (cd "$BROWSER_TESTS" && npm ci --no-audit --no-fund --loglevel=error)
fi

stack_urls "$STACK"
export BATON_STACK_OUTPUTS="$BUILD/$STACK.outputs.json"
export BATON_ARTIFACTS="$BUILD/browser"
export BATON_STATIC_DIR="$BUILD/browser/static"
export BATON_STATIC_PORT="${BATON_STATIC_PORT:-4599}"
export AWS_CLI="$AWS"
token() { (cd "$ROOT" && cargo run --quiet -p baton-graphql --bin baton-token -- browser "$@"); }
BATON_TOKEN=$(token operator --admin)
BATON_USER_TOKEN=$(token viewer)
export BATON_TOKEN BATON_USER_TOKEN
(cd "$ROOT" && cargo run --quiet -p baton-graphql --bin baton-dashboard -- \
  "$GRAPHQL_URL" "$WEBSOCKET_URL" "$BATON_STATIC_DIR" >/dev/null)
cd "$BROWSER_TESTS" && npm test
