#!/usr/bin/env bash
# Headless Chromium for the bench report test (test/unit/bench-report.test.ts)
# and `podwarp-dev bench --png`: Debian's chromium package, driven by
# playwright-core (no browser download). Installed when missing; idempotent.
# Run by scripts/test.sh; as another user than root it only says what is missing.
set -euo pipefail
chromium=${PODWARP_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "setup-browser: no $chromium (apt-get install chromium as root); the report's browser test will be skipped" >&2
  exit 0
fi
echo "installing: chromium (for the bench report test)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
