#!/usr/bin/env bash
# Tests of the TypeScript client: install exactly the locked dependencies, check
# that src/schema.ts matches the /openapi.json of a live readstate, build and run
# the tests against real readstate processes. Needs the workspace's debug binary
# (`cargo build` first) or READSTATE_BIN. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

bin="${READSTATE_BIN:-../../target/debug/readstate}"
if [[ ! -x "$bin" ]]; then
  echo "clients/typescript/test.sh: readstate binary not found at $bin (run \`cargo build\` first, or set READSTATE_BIN)" >&2
  exit 1
fi

npm ci --no-audit --no-fund
npm run check:types
npm test
