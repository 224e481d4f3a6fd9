#!/usr/bin/env bash
# Builds every function for AWS Lambda (provided.al2023, arm64) with cargo-lambda and lays the
# packages out as the template expects them: .build/package/{function}.zip, to upload under
# s3://{CodeBucket}/{CodePrefix}. Prints each package's size.
#
#   infra/package.sh            (or: make package)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/.build/package"
mapfile -t FUNCTIONS <"$ROOT/infra/functions"

rustup target add aarch64-unknown-linux-gnu >/dev/null
packages=()
for f in "${FUNCTIONS[@]}"; do packages+=(-p "baton-fn-$f"); done
(cd "$ROOT" && PATH="$ROOT/.venv/bin:$PATH" cargo lambda build --release --arm64 \
  --output-format zip "${packages[@]}")

rm -rf "$OUT" && mkdir -p "$OUT"
for f in "${FUNCTIONS[@]}"; do
  cp "$ROOT/target/lambda/baton-fn-$f/bootstrap.zip" "$OUT/$f.zip"
done
echo "packages for arm64 in .build/package:"
(cd "$OUT" && for f in "${FUNCTIONS[@]}"; do
  printf '  %-10s %8.2f MB\n' "$f" "$(echo "$(stat -c %s "$f.zip") / 1048576" | bc -l)"
done)
