#!/usr/bin/env bash
# Runs test files one vitest invocation each (so each file gets its own row),
# with vitest's JSON reporter. Used inside the matrix VMs and for the host row.
#
#   devtools/vm/run-tests.sh OUTDIR test/unit/btf.test.ts test/integration/datapath.test.ts ...
#
# OUTDIR gets, per file F (basename): F.json (vitest JSON), F.log (console),
# F.time (seconds). A file's vitest exit code is not this script's: the
# table is built from the JSON. Exit code 0 unless the script itself failed.
set -uo pipefail
out=$1; shift
mkdir -p "$out"
cd "$(dirname "$0")/../.."
for f in "$@"; do
  name=$(basename "$f" .ts)
  echo "pwvm-tests: $f (start $(date -u +%H:%M:%S))"
  t0=$(date +%s.%N)
  # vitest's own entry (npx costs a minute of start-up under emulation)
  node node_modules/vitest/vitest.mjs run "$f" --reporter=default --reporter=json --outputFile.json="$out/$name.json" >"$out/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }' >"$out/$name.time"
  echo "$rc" >"$out/$name.rc"
  echo "pwvm-tests: $f exited $rc after $(cat "$out/$name.time") s"
  tail -n 6 "$out/$name.log"
done
