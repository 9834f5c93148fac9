#!/usr/bin/env bash
# The kind e2e in one command (root), with no container registry: installs
# what is missing (Debian: debootstrap, podman, buildah, …; Go must be there),
# builds kind v0.33.0, Kubernetes v1.36.3 + kubeadm, kind's base and node images
# and podwarp:dev on the first run (cached under /var/cache/podwarp), starts a
# private Docker engine (Debian's docker.io, unpacked, never installed) and the
# 2-node cluster of deploy/kind.yaml, runs test/e2e/kind.test.ts, and takes it
# all down again, also on failure. See test/e2e/kind/README.md.
#   PWKIND_KEEP=1   leave the cluster up (prints how to reach and remove it)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# command → Debian package, for what is missing (images.sh: podman, debootstrap,
# busybox-static, gcc; build.sh: debootstrap, python3; lib.sh: runc, containerd)
need=(podman:podman buildah:buildah debootstrap:debootstrap newuidmap:uidmap fuse-overlayfs:fuse-overlayfs
  slirp4netns:slirp4netns gcc:gcc containerd:containerd runc:runc python3:python3 /bin/busybox:busybox-static)
pkgs=()
for n in "${need[@]}"; do command -v "${n%%:*}" >/dev/null || pkgs+=("${n#*:}"); done
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "installing: ${pkgs[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
[ -x /usr/local/go/bin/go ] && export PATH=$PATH:/usr/local/go/bin
run=$(bash test/e2e/kind/up.sh)
if [ -z "${PWKIND_KEEP:-}" ]; then trap 'bash test/e2e/kind/down.sh "$run"' EXIT; fi
mkdir -p "${PODWARP_RESULTS:-build/results}"
PWKIND_RUN=$run npx vitest run --project e2e test/e2e/kind.test.ts \
  --reporter=default --reporter=json --outputFile.json="${PODWARP_RESULTS:-build/results}/e2e-kind.json" "$@"
if [ -n "${PWKIND_KEEP:-}" ]; then
  echo "kept: . $run/env; kubectl get nodes; remove with: bash test/e2e/kind/down.sh $run" >&2
fi
