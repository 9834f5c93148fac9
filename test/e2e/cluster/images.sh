#!/usr/bin/env bash
# Builds the e2e cluster's images without any registry and caches them as
# tarballs under $PODWARP_IMAGE_CACHE (default /var/cache/podwarp/images):
#   pause.tar     localhost/pwe2e/pause:1          static C pause (images/pause.c)
#   test.tar      localhost/pwe2e/test:1           busybox-static + pwperf (static)
#   node20.tar    localhost/pwe2e/node:20-bookworm a debootstrapped bookworm with the
#                 host's Node 20 binary copied in (test-only: Debian bookworm ships
#                 Node 18) and npm 10.8.2 from the npm registry
#   podwarp-<hash>.tar  docker.io/library/podwarp:dev, the repo's Dockerfile
#                 built FROM the local base (build-arg NODE_IMAGE); the name
#                 deploy/podwarp.yaml already uses, so the manifest is applied as is
# A tarball whose inputs did not change is not rebuilt. Prints the tar paths
# (content-addressed: podwarp-<hash>.tar, test-<hash>.tar).
#   PWPERF_C   the traffic tool's source (default devtools/tools/pwperf.c)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${PODWARP_IMAGE_CACHE:-/var/cache/podwarp/images}
PWPERF_C=${PWPERF_C:-$repo/devtools/tools/pwperf.c}
NPM_VERSION=10.8.2
mkdir -p "$cache"
# one images.sh at a time per cache: the podman storage, its run root and the
# tag podwarp:dev are shared, so a second run (another checkout) waits here
exec 9>"$cache/.lock"
flock 9
# podman with storage of its own: nothing shared with another podman user
podman_root="$cache/podman"
run_root="/run/pwe2e-podman"
pm() { podman --root "$podman_root/root" --runroot "$run_root" --cgroup-manager cgroupfs --events-backend file "$@"; }
log() { echo "images.sh: $*" >&2; }
work=$(mktemp -d /tmp/pwe2e-img.XXXXXX)
# leave no build container or storage mount behind (also after a failed build)
cleanup() {
  buildah --root "$podman_root/root" --runroot "$run_root" rm --all >/dev/null 2>&1 || true
  if mountpoint -q "$podman_root/root/overlay"; then umount "$podman_root/root/overlay" 2>/dev/null || true; fi
  rm -rf "$work" "$run_root"
}
trap cleanup EXIT

hash_of() { (cd "$repo" && for p in "$@"; do if [[ -d $p ]]; then find "$p" -type f -print0 | sort -z | xargs -0 sha256sum; else sha256sum "$p"; fi; done) | sha256sum | cut -c1-16; }

# pause
if [[ ! -s $cache/pause.tar ]]; then
  mkdir -p "$work/pause" && gcc -O2 -static -s -o "$work/pause/pause" "$here/images/pause.c"
  printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' > "$work/pause/Containerfile"
  pm build -q -t localhost/pwe2e/pause:1 "$work/pause" >&2
  pm save --format docker-archive -o "$cache/pause.tar.tmp" localhost/pwe2e/pause:1 && mv "$cache/pause.tar.tmp" "$cache/pause.tar"
  log "pause built"
fi

# test image: busybox + pwperf, both static
th=$(sha256sum "$PWPERF_C" /bin/busybox | sha256sum | cut -c1-16)
if [[ ! -s $cache/test-$th.tar ]]; then
  mkdir -p "$work/test" && gcc -O2 -static -s -o "$work/test/pwperf" "$PWPERF_C"
  cp /bin/busybox "$work/test/busybox"
  file "$work/test/busybox" | grep -q 'statically linked' || { log "/bin/busybox is not static (apt-get install busybox-static)"; exit 1; }
  cat > "$work/test/Containerfile" <<'EOT'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY pwperf /bin/pwperf
ENTRYPOINT ["/bin/sh"]
EOT
  pm build -q --network none -t localhost/pwe2e/test:1 "$work/test" >&2
  pm save --format docker-archive -o "$cache/test.tar.tmp" localhost/pwe2e/test:1 && mv "$cache/test.tar.tmp" "$cache/test-$th.tar"
  log "test image built"
fi
ln -sf "test-$th.tar" "$cache/test.tar"

# base: debootstrapped bookworm + the host's node 20 (test-only step)
if [[ ! -s $cache/node20-npm$NPM_VERSION.tar ]]; then
  node --version | grep -q '^v20\.' || { log "host node is not 20: $(node --version)"; exit 1; }
  t0=$(date +%s)
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  cp /usr/bin/node "$work/rootfs/usr/bin/node"
  # npm as the official node:20 image has it (10.8.2, from the npm registry):
  # the host's npm 11 refuses `npm ci` with this repo's lock file
  mkdir -p "$work/rootfs/usr/lib/node_modules" "$work/npm"
  [[ -s $cache/npm-$NPM_VERSION.tgz ]] || (cd "$work/npm" && npm pack "npm@$NPM_VERSION" --silent >/dev/null && mv "npm-$NPM_VERSION.tgz" "$cache/")
  tar -xzf "$cache/npm-$NPM_VERSION.tgz" -C "$work/npm"
  mv "$work/npm/package" "$work/rootfs/usr/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$work/rootfs/usr/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$work/rootfs/usr/bin/npx"
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  # a build machine whose TLS goes through an intercepting proxy names its CA in
  # NODE_EXTRA_CA_CERTS: the image's npm needs it too (test-only image)
  changes=(--change 'CMD ["node"]')
  if [[ -n ${NODE_EXTRA_CA_CERTS:-} && -s $NODE_EXTRA_CA_CERTS ]]; then
    mkdir -p "$work/rootfs/etc/pwe2e" && cp "$NODE_EXTRA_CA_CERTS" "$work/rootfs/etc/pwe2e/extra-ca.pem"
    changes+=(--change 'ENV NODE_EXTRA_CA_CERTS=/etc/pwe2e/extra-ca.pem')
  fi
  tar -C "$work/rootfs" -c . | pm import "${changes[@]}" - localhost/pwe2e/node:20-bookworm >&2
  pm save --format docker-archive -o "$cache/node20.tar.tmp" localhost/pwe2e/node:20-bookworm && mv "$cache/node20.tar.tmp" "$cache/node20-npm$NPM_VERSION.tar"
  rm -rf "$work/rootfs"
  log "base built in $(( $(date +%s) - t0 ))s"
fi

# podwarp from the repo's Dockerfile
ph=$(hash_of Dockerfile package.json package-lock.json tsconfig.json tsconfig.build.json scripts/bundle.mjs scripts/build-info.mjs bin bpf host loader src $(cd "$repo" && ls -d abi test/bench/pwperf.c test/bench/pwproxy.c 2>/dev/null))
if [[ ! -s $cache/podwarp-$ph.tar ]]; then
  pm load -q -i "$cache/node20-npm$NPM_VERSION.tar" >&2
  t0=$(date +%s)
  nice -n 10 podman --root "$podman_root/root" --runroot "$run_root" --cgroup-manager cgroupfs --events-backend file \
    build --network host --build-arg NODE_IMAGE=localhost/pwe2e/node:20-bookworm \
    --build-arg PODWARP_COMMIT="$(git -C "$repo" rev-parse HEAD 2>/dev/null || true)" \
    -t docker.io/library/podwarp:dev -f "$repo/Dockerfile" "$repo" >"$work/podwarp-build.log" 2>&1 \
    || { tail -40 "$work/podwarp-build.log" >&2; exit 1; }
  pm save --format docker-archive -o "$cache/podwarp.tar.tmp" docker.io/library/podwarp:dev && mv "$cache/podwarp.tar.tmp" "$cache/podwarp-$ph.tar"
  log "podwarp image built in $(( $(date +%s) - t0 ))s"
fi
ln -sf "podwarp-$ph.tar" "$cache/podwarp.tar"
# older podwarp images (1 GB each): the three newest stay
# (grep finds nothing to remove with three or fewer: not an error)
ls -t "$cache"/podwarp-*.tar 2>/dev/null | tail -n +4 | { grep -v -F "podwarp-$ph.tar" || true; } | xargs -r rm -f
# this checkout's tarballs by content hash, not the shared links: another
# checkout's run may point the links elsewhere before ours are imported
echo "$cache/pause.tar"; echo "$cache/test-$th.tar"; echo "$cache/podwarp-$ph.tar"
