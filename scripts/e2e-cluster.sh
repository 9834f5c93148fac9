#!/usr/bin/env bash
# The real-cluster e2e in one command (root): installs what is missing
# (Debian: containerd, runc, CNI plugins, podman, buildah, debootstrap, …;
# Go must be there), builds Kubernetes v1.36.3 from the Go module proxy on the
# first run (cached under /var/cache/podwarp), brings a single-node cluster up,
# deploys podwarp from deploy/, runs test/e2e/cluster.test.ts, tears it down;
# once with kube-proxy in iptables mode, once in nftables mode
# (PWE2E_PROXY_MODES="iptables" for one). See test/e2e/cluster/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pkgs=()
command -v containerd >/dev/null || pkgs+=(containerd)
command -v runc >/dev/null || pkgs+=(runc)
[ -x /usr/lib/cni/ptp ] && [ -x /usr/lib/cni/host-local ] || pkgs+=(containernetworking-plugins)
command -v podman >/dev/null || pkgs+=(podman)
command -v buildah >/dev/null || pkgs+=(buildah)
command -v debootstrap >/dev/null || pkgs+=(debootstrap)
command -v conntrack >/dev/null || pkgs+=(conntrack)
command -v socat >/dev/null || pkgs+=(socat)
command -v newuidmap >/dev/null || pkgs+=(uidmap)
command -v fuse-overlayfs >/dev/null || pkgs+=(fuse-overlayfs)
command -v slirp4netns >/dev/null || pkgs+=(slirp4netns)
command -v openssl >/dev/null || pkgs+=(openssl)
command -v gcc >/dev/null || pkgs+=(gcc)
command -v nft >/dev/null || pkgs+=(nftables)
[ -x /bin/busybox ] || pkgs+=(busybox-static)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "installing: ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
[ -x /usr/local/go/bin/go ] && export PATH=$PATH:/usr/local/go/bin
for mode in ${PWE2E_PROXY_MODES:-iptables nftables}; do
  echo "e2e-cluster: kube-proxy in $mode mode" >&2
  mkdir -p "${PODWARP_RESULTS:-build/results}"
  PWE2E_PROXY_MODE=$mode PODWARP_E2E_CLUSTER=1 npx vitest run --project e2e test/e2e/cluster.test.ts \
    --reporter=default --reporter=json --outputFile.json="${PODWARP_RESULTS:-build/results}/e2e-cluster-$mode.json" "$@"
done
