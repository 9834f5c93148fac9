#!/usr/bin/env bash
# Runs test files in one vitest invocation (its start-up and transforms,
# about a minute per file under TCG emulation, are paid once) with the
# file-results reporter, which writes each file's row as the file ends. Used
# inside the matrix VMs and for the host row.
#
#   devtools/vm/run-tests.sh OUTDIR test/unit/btf.test.ts test/integration/datapath.test.ts ...
#
# OUTDIR gets, per file F (basename): F.json (the shape of vitest's JSON
# reporter), F.time (seconds of that file: collect, hooks, tests), F.queued
# (written before the run: a file with this and no F.json was cut off), and
# F.log (the run's console, all.log) for a file that got no result. vitest's
# exit code is not this script's: the table is built from the JSON. Exit code
# 0 unless the script itself failed.
set -uo pipefail
out=$1; shift
mkdir -p "$out"
cd "$(dirname "$0")/../.."
names=()
for f in "$@"; do
  n=$(basename "$f" .ts)
  names+=("$n")
  rm -f "$out/$n.json" "$out/$n.time" "$out/$n.log"
  : >"$out/$n.queued"
done
echo "pwvm-tests: ${#names[@]} files in one vitest run (start $(date -u +%H:%M:%S))"
t0=$(date +%s.%N)
# vitest's own entry (npx costs a minute of start-up under emulation)
PWVM_RESULTS=$out node node_modules/vitest/vitest.mjs run "$@" --reporter=default --reporter=./devtools/vm/file-results.mjs 2>&1 \
  | tee "$out/all.log" | grep --line-buffered -a '^pwvm-tests:'
rc=${PIPESTATUS[0]}
t1=$(date +%s.%N)
echo "pwvm-tests: vitest exited $rc after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
for n in "${names[@]}"; do [ -f "$out/$n.json" ] || cp "$out/all.log" "$out/$n.log"; done
grep -a -A4 'Test Files' "$out/all.log" || tail -n 6 "$out/all.log"
