#!/usr/bin/env bash
# Builds every function as a native `bootstrap`, uploads the packages that changed to the
# emulator's S3 (keys are content hashes, so an unchanged function keeps its key and is not
# redeployed), and deploys infra/template.yaml as stack $1 with stage $2.
# `BATON_PROFILE=release` builds and deploys release binaries (default: the dev profile).
#
#   localstack/deploy.sh STACK STAGE
set -euo pipefail
source "$(dirname "$0")/env.sh"
STACK="${1:?usage: deploy.sh STACK STAGE}"
STAGE="${2:?usage: deploy.sh STACK STAGE}"
BUCKET="${BATON_CODE_BUCKET:-baton-code}"
# The function list (one name per line) is shared with infra/package.sh.
mapfile -t FUNCTIONS <"$ROOT/infra/functions"
case "$(uname -m)" in aarch64|arm64) ARCH=arm64 ;; *) ARCH=x86_64 ;; esac

PROFILE="${BATON_PROFILE:-dev}"
case "$PROFILE" in dev) TARGET_DIR=debug ;; *) TARGET_DIR="$PROFILE" ;; esac
echo "building bootstraps ($PROFILE profile)"
packages=()
for f in "${FUNCTIONS[@]}"; do packages+=(-p "baton-fn-$f"); done
# The chaos run's stack is built with its faults compiled in; every other build carries none.
features=()
if [ -n "${BATON_CHAOS:-}" ]; then features=(--features baton-aws/chaos); fi
(cd "$ROOT" && cargo build --quiet --profile "$PROFILE" --bins "${packages[@]}" "${features[@]}")

"$AWS" s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1 || "$AWS" s3 mb "s3://$BUCKET" >/dev/null

overrides=(Stage="$STAGE" Architecture="$ARCH" CodeBucket="$BUCKET"
  FunctionTimeoutSeconds="${BATON_FUNCTION_TIMEOUT:-5}"
  QueueVisibilitySeconds="${BATON_VISIBILITY_TIMEOUT:-5}"
  MaxReceiveCount="${BATON_MAX_RECEIVE_COUNT:-3}"
  LogLevel="${BATON_LOG_LEVEL:-info}"
  JwtSecret="$BATON_JWT_SECRET" JwtIssuer="$BATON_JWT_ISSUER" JwtAudience="$BATON_JWT_AUDIENCE")
# Test only (the chaos run): faults the functions inject; the template honours it on local and test.
if [ -n "${BATON_CHAOS:-}" ]; then overrides+=(Chaos="$BATON_CHAOS"); fi
# The local and test stages let the HTTP executor call one loopback address: the echo server of
# `make demo` and the tests (every other private destination stays refused).
case "$STAGE" in local|test) overrides+=(HttpAllowedDestinations="127.0.0.1:$BATON_ECHO_PORT") ;; esac
# Where the dashboard is hosted as a static page (`make dashboard`): origins the HTTP API allows.
if [ -n "${BATON_DASHBOARD_ORIGINS:-}" ]; then overrides+=(DashboardOrigins="$BATON_DASHBOARD_ORIGINS"); fi
for f in "${FUNCTIONS[@]}"; do
  binary="$ROOT/target/$TARGET_DIR/baton-fn-$f"
  hash=$(sha256sum "$binary" | cut -c1-16)
  key="functions/$f-$hash.zip"
  if ! "$AWS" s3api head-object --bucket "$BUCKET" --key "$key" >/dev/null 2>&1; then
    mkdir -p "$BUILD/local"
    "$ROOT/.venv/bin/python" "$ROOT/localstack/package.py" "$binary" "$BUILD/local/$f.zip"
    "$AWS" s3 cp --quiet "$BUILD/local/$f.zip" "s3://$BUCKET/$key"
    echo "  uploaded $f ($hash)"
  fi
  param=$(echo "$f" | sed -E 's/(^|-)([a-z])/\U\2/g')CodeKey
  overrides+=("$param=$key")
done

echo "deploying stack $STACK (stage $STAGE)"
"$AWS" cloudformation deploy \
  --stack-name "$STACK" \
  --template-file "$ROOT/infra/template.yaml" \
  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
  --no-fail-on-empty-changeset \
  --parameter-overrides "${overrides[@]}" >/dev/null
# MiniStack provisions the template's CorsConfiguration empty; the API's own call sets it as the
# template does.
if [ -n "${BATON_DASHBOARD_ORIGINS:-}" ]; then
  "$AWS" apigatewayv2 update-api --api-id "$(stack_output "$STACK" HttpApiId)" --cors-configuration \
    "AllowOrigins=$BATON_DASHBOARD_ORIGINS,AllowMethods=GET,POST,AllowHeaders=authorization,content-type,MaxAge=3600" >/dev/null
fi
"$AWS" cloudformation describe-stacks --stack-name "$STACK" \
  --query 'Stacks[0].Outputs' --output json >"$BUILD/$STACK.outputs.json"
echo "stack $STACK deployed; outputs in .build/$STACK.outputs.json"
