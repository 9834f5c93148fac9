#!/usr/bin/env bash
# Builds the upstream Kubernetes commands the real-cluster e2e needs from the
# Go module proxy (pinned in tools/go.mod) and caches them by version outside
# the repository. A second run with the same version builds nothing.
#
#   test/e2e/cluster/build.sh            # prints the bin directory on stdout
#   PODWARP_K8S_CACHE=/somewhere build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools="$here/tools"
K8S_VERSION=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2} $1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$tools/go.mod" | head -1)
[[ $K8S_VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] || { echo "build.sh: no k8s.io/kubernetes version in $tools/go.mod" >&2; exit 3; }
cache=${PODWARP_K8S_CACHE:-/var/cache/podwarp}
bin="$cache/k8s/$K8S_VERSION/bin"
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd)
# etcd is built at the version k8s.io/kubernetes itself requires.
pkg_of() { if [[ $1 == etcd ]]; then echo go.etcd.io/etcd/server/v3; else echo "k8s.io/kubernetes/cmd/$1"; fi; }

missing=()
for c in "${cmds[@]}"; do [[ -x "$bin/$c" ]] || missing+=("$c"); done
if ((${#missing[@]} == 0)); then echo "$bin"; exit 0; fi
[[ -x "$GO" ]] || { echo "build.sh: go not found (set GO=)" >&2; exit 3; }

export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$GOMODCACHE" "$GOCACHE" "$bin.tmp"
v=${K8S_VERSION#v}; major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
ld=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
start=$(date +%s)
cd "$tools"
for c in "${missing[@]}"; do
  t0=$(date +%s)
  nice -n 10 "$GO" build -trimpath -ldflags "-s -w$ld" -o "$bin.tmp/$c" "$(pkg_of "$c")" >&2
  mkdir -p "$bin" && mv "$bin.tmp/$c" "$bin/$c"   # kept even if a later one fails
  echo "build.sh: $c built in $(( $(date +%s) - t0 ))s" >&2
done
rmdir "$bin.tmp" 2>/dev/null || true
echo "build.sh: $K8S_VERSION: ${missing[*]} built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
