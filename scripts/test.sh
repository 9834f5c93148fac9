#!/usr/bin/env bash
# README command 2: install what is missing, then run every test (unit and
# root integration tests), and print passed / failed / skipped per project
# with the reason of every skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-browser.sh
# the three projects that need no cluster (the e2e project runs from scripts/e2e-*.sh);
# the report goes to build/results/ (PODWARP_RESULTS, CI collects every suite's there)
results=${PODWARP_RESULTS:-build/results}
mkdir -p "$results"
set +e
npx vitest run --project unit --project bpf --project integration \
  --reporter=default --reporter=json --outputFile.json="$results/test.json" "$@"
rc=$?
set -e
node scripts/test-summary.mjs "$results/test.json" || true
exit $rc
