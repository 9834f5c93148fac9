#!/usr/bin/env bash
# Fails when a BPF source differs from clang-format's output (bpf/.clang-format).
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
for f in bpf/*.c bpf/*.h bpf/iter/*.c bpf/iter/*.h bpf/trace/*.c bpf/trace/*.h bpf/fallback/*.c bpf/tests/*.c bpf/tests/*.h; do
  if ! clang-format --style=file:bpf/.clang-format "$f" | diff -q "$f" - >/dev/null; then
    echo "clang-format: $f differs (npm run format)" >&2
    bad=1
  fi
done
exit $bad
