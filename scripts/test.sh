#!/usr/bin/env bash
# README command 2: install what is missing, then run every test (unit and
# root integration tests), and print a one-line summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-browser.sh
mkdir -p build
set +e
npx vitest run --reporter=default --reporter=json --outputFile.json=build/vitest.json "$@"
rc=$?
set -e
if [ -f build/vitest.json ]; then
  node -e 'const r=require("./build/vitest.json"); console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`)'
fi
exit $rc
