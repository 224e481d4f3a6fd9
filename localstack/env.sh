# Sourced by the scripts: the emulator's address and dummy credentials. Anything already set in the
# environment wins, so AWS_ENDPOINT_URL can point at another emulator (e.g. a LocalStack you run).
: "${BATON_EMULATOR_PORT:=4566}"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:${BATON_EMULATOR_PORT}}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="$AWS_DEFAULT_REGION"
export AWS_PAGER=""
# Local stacks verify bearer tokens themselves (HS256); tests and `make dev` mint tokens with the
# same values. For the emulator only: on AWS an identity provider issues the tokens.
export BATON_JWT_SECRET="${BATON_JWT_SECRET:-baton-local-dev-secret-change-me}"
export BATON_JWT_ISSUER="${BATON_JWT_ISSUER:-baton-local}"
export BATON_JWT_AUDIENCE="${BATON_JWT_AUDIENCE:-baton}"
# The loopback echo server of `make demo` and the tests: the one private address the local and
# test stages allow the HTTP executor to call.
export BATON_ECHO_PORT="${BATON_ECHO_PORT:-4597}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/.build"
AWS="$ROOT/.venv/bin/aws"
mkdir -p "$BUILD"
# `aws` after sourcing this file: the pinned CLI, pointed at $AWS_ENDPOINT_URL explicitly (the v1
# CLI's SQS commands ignore the variable otherwise).
aws() {
  if [ -n "${AWS_ENDPOINT_URL:-}" ]; then "$AWS" --endpoint-url "$AWS_ENDPOINT_URL" "$@"; else "$AWS" "$@"; fi
}
# Whether an emulator answers at $AWS_ENDPOINT_URL (MiniStack, or a LocalStack you run).
emulator_healthy() {
  curl -fsS -m 2 "$AWS_ENDPOINT_URL/_ministack/health" >/dev/null 2>&1 \
    || curl -fsS -m 2 "$AWS_ENDPOINT_URL/_localstack/health" >/dev/null 2>&1
}
# Starts MiniStack unless an emulator answers; `emulator_started` is set when this started it, so
# the caller stops only what it started.
emulator_started=""
ensure_emulator() {
  if ! emulator_healthy; then
    "$ROOT/localstack/start.sh"
    emulator_started=yes
  fi
}
# One output of stack $1: `stack_output STACK KEY`.
stack_output() {
  "$AWS" cloudformation describe-stacks --stack-name "$1" \
    --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue" --output text
}
# Where stack $1 answers in the emulator: sets DASHBOARD_URL, GRAPHQL_URL and WEBSOCKET_URL.
stack_urls() {
  DASHBOARD_URL="$AWS_ENDPOINT_URL/_aws/execute-api/$(stack_output "$1" HttpApiId)/\$default/"
  GRAPHQL_URL="${DASHBOARD_URL}graphql"
  WEBSOCKET_URL="${AWS_ENDPOINT_URL/http/ws}/_aws/execute-api/$(stack_output "$1" WebSocketApiId)/$(stack_output "$1" WebSocketStage)"
}
