#!/usr/bin/env bash
# README command 1: install what is missing, then run the demo on a local sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ./bin/podwarp-dev demo "$@"
