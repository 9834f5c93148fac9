#!/usr/bin/env bash
# Installs what podwarp needs and is missing: Debian/Ubuntu packages (clang,
# llvm, bpftool, libbpf headers, iproute2, iptables, conntrack, clang-format, zsh and fish for the completion tests) and the npm
# packages (npm ci: exactly the lock file).
# Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "podwarp needs root (BPF, netns, tc): run as root" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "podwarp needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

missing=()
command -v clang >/dev/null || missing+=(clang)
command -v llvm-objdump >/dev/null || missing+=(llvm)
command -v bpftool >/dev/null || missing+=(bpftool)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
command -v ip >/dev/null && command -v tc >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null || missing+=(conntrack) # tests: kube-proxy's UDP conntrack cleanup
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v clang-format >/dev/null || missing+=(clang-format)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v zsh >/dev/null || missing+=(zsh)   # tests: podwarp completion zsh
command -v fish >/dev/null || missing+=(fish) # tests: podwarp completion fish
[ -d "/usr/include/$(uname -m)-linux-gnu/asm" ] || [ -d /usr/include/asm ] || missing+=(linux-libc-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    # Ubuntu ships bpftool in linux-tools
    apt-get install -y -qq --no-install-recommends "${missing[@]/bpftool/linux-tools-common}" "linux-tools-$(uname -r)" >/dev/null
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# the agent and CLI as plain JS (dist/): bin/podwarp runs it while it is
# newer than every source file (less memory and a faster start than tsx)
if [ ! -f dist/.stamp ] || [ ! -f dist/bundle/main.js ] || [ -n "$(find abi src loader host -newer dist/.stamp -print -quit)" ]; then
  npm run --silent build:js
fi
