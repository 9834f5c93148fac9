#!/usr/bin/env bash
# Builds everything kind needs on this machine without any container registry
# and caches it under $PODWARP_KIND_CACHE (default /var/cache/podwarp/kind):
#
#   bin/kind                 sigs.k8s.io/kind v0.33.0 from the Go module proxy
#   docker-20.10.24/         Debian's docker.io + tini, unpacked (lib.sh)
#   bin/kubeadm, bin/crictl, bin/coredns, bin/local-path-provisioner
#                            Go builds (kubeadm from ../cluster/tools' pinned
#                            k8s.io/kubernetes; the others from the module proxy at
#                            the versions below). No kindnetd: the cluster is made
#                            with disableDefaultCNI and up.sh wires ptp + host-local
#                            itself (kind's images/kindnetd is a module the proxy
#                            does not serve, and no source of it is committed)
#   base-<hash>.tar          pwkind/base:<hash>, kind's base image (images/base of
#                            kind v0.33.0) made from a debootstrapped bookworm and
#                            Debian's systemd, containerd 1.6, runc 1.1, CNI plugins
#   node-<hash>.tar          pwkind/node:<k8s>-<hash>, made by `kind build node-image
#                            --type file` from a Kubernetes server tarball laid out
#                            as a release's (kubernetes/server/bin/...), assembled
#                            from the binaries of ../cluster/build.sh and images
#                            made here
#
# It starts a private Docker engine for the image steps and stops it at the end.
# Prints the node image's tarball, its name and the podwarp:dev tarball. Run as root.
#
#   build.sh --cached   builds nothing: prints the node image's tarball and exits 0
#                       if it is in the cache for the pinned versions, else exits 1
#                       (.ci/run runs the kind e2e only then)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
. "$here/lib.sh"
mkdir -p "$kind_cache/bin"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
t_all=$(date +%s)

gobuild() { # name dir pkg
  local name=$1 dir=$2 pkg=$3 t0
  [[ -x $kind_cache/bin/$name ]] && return 0
  t0=$(date +%s)
  (cd "$dir" && nice -n 10 "$GO" build -trimpath -ldflags '-s -w' -o "$kind_cache/bin/$name.tmp" "$pkg") >&2
  mv "$kind_cache/bin/$name.tmp" "$kind_cache/bin/$name"
  pwk_log "$name built in $(( $(date +%s) - t0 ))s"
}
goinstall() { # name module@version (a main package of a published module)
  local name=$1 mv=$2 t0 tmp
  [[ -x $kind_cache/bin/$name ]] && return 0
  t0=$(date +%s); tmp=$(mktemp -d)
  GOBIN=$tmp nice -n 10 "$GO" install -trimpath -ldflags '-s -w' "$mv" >&2
  mv "$tmp/$(basename "${mv%@*}")" "$kind_cache/bin/$name"; rmdir "$tmp"
  pwk_log "$name ($mv) built in $(( $(date +%s) - t0 ))s"
}

cached_only=0; [[ ${1:-} == --cached ]] && cached_only=1

# ---- tools ------------------------------------------------------------------
if ((cached_only == 0)); then
pwk_docker_unpack
[[ -x $GO ]] || { pwk_log "go not found (set GO=)"; exit 3; }
kind_src="$GOMODCACHE/sigs.k8s.io/kind@$KIND_VERSION"
[[ -d $kind_src ]] || (cd /tmp && "$GO" mod download "sigs.k8s.io/kind@$KIND_VERSION")
gobuild kind "$kind_src" .
k8s_bin=$(bash "$here/../cluster/build.sh")
gobuild kubeadm "$here/../cluster/tools" k8s.io/kubernetes/cmd/kubeadm
goinstall crictl sigs.k8s.io/cri-tools/cmd/crictl@v1.36.0
goinstall coredns github.com/coredns/coredns@v1.14.2
# kind v0.33.0 builds local-path-provisioner v0.0.34; the module proxy here serves v0.0.30 at most
goinstall local-path-provisioner github.com/rancher/local-path-provisioner@v0.0.30
mapfile -t images_out < <(bash "$here/../cluster/images.sh")  # pause, test (busybox), podwarp:dev
[[ ${#images_out[@]} == 3 ]] || { pwk_log "../cluster/images.sh failed"; exit 1; }
pause_tar=${images_out[0]} test_tar=${images_out[1]} podwarp_tar=${images_out[2]}
else
  # what the hashes below read, without building any of it
  pause_tar=${PODWARP_IMAGE_CACHE:-/var/cache/podwarp/images}/pause.tar
  for f in "$kind_cache/bin/"{kind,kubeadm,crictl,coredns,local-path-provisioner} \
    "$k8s_bin/"{kubelet,kubectl,kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy,etcd} "$pause_tar"; do
    [[ -s $f ]] || { pwk_log "not cached: $f"; exit 1; }
  done
fi

# ---- the base image -----------------------------------------------------------
# the node's containerd may not set oom_score_adj below 0 where root lacks
# CAP_SYS_RESOURCE (this machine): restrict_oom_score_adj, as ../cluster/up.sh does
cap_sys_resource=1
(( (0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24) & 1 )) || cap_sys_resource=0
base_hash=$( (cd "$here" && sha256sum base.sh lib.sh; echo "$KIND_VERSION cap_sys_resource=$cap_sys_resource";
  sha256sum "$kind_cache/bin/crictl") | sha256sum | cut -c1-16)
base_tar="$kind_cache/base-$base_hash.tar"
base_image="pwkind/base:$base_hash"

# the node image follows the pinned versions and these scripts, not the repo:
# the test image (local-path's helper, see below) is whichever was current at
# its build, so a change to the traffic tool does not rebuild the node
node_hash=$( (echo "$base_hash $K8S_VERSION"; sha256sum "$here/build.sh" "$kind_cache/bin/"{kind,kubeadm,coredns,local-path-provisioner} \
  "$k8s_bin/"{kubelet,kubectl,kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy,etcd} "$pause_tar") \
  | sed "s|  /.*/|  |" | sha256sum | cut -c1-16)
node_tar="$kind_cache/node-$node_hash.tar"
node_image="pwkind/node:$K8S_VERSION-$node_hash"
if ((cached_only)); then
  [[ -s $node_tar ]] || { pwk_log "not cached: $node_tar"; exit 1; }
  echo "$node_tar"; exit 0
fi
if [[ -s $node_tar ]]; then
  pwk_log "cached: $node_tar ($(( $(date +%s) - t_all ))s)"
  echo "$node_tar"; echo "$node_image"; echo "$podwarp_tar"; exit 0
fi

id="b$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
work=$(mktemp -d /var/tmp/pwkind-build.XXXXXX)
cleanup() { pwk_dockerd_stop "$id"; rm -rf "$work"; }
trap cleanup EXIT
pwk_dockerd_start "$id"

if [[ -s $base_tar ]]; then
  docker load -q -i "$base_tar" >&2
else
  t0=$(date +%s)
  bash "$here/base.sh" "$work/rootfs" "$kind_src/images/base/files" "$kind_cache/bin/crictl" "$cap_sys_resource" >&2
  tar -C "$work/rootfs" -c . | docker import - "$base_image-rootfs" >&2
  rm -rf "$work/rootfs"
  # the last lines of kind's Dockerfile (docker import takes no STOPSIGNAL)
  mkdir -p "$work/base"
  printf '%s\n' "FROM $base_image-rootfs" 'ENV container=docker' 'STOPSIGNAL SIGRTMIN+3' \
    'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' >"$work/base/Dockerfile"
  docker build -q -t "$base_image" "$work/base" >&2
  docker save -o "$base_tar.tmp" "$base_image" && mv "$base_tar.tmp" "$base_tar"
  pwk_log "base image built in $(( $(date +%s) - t0 ))s"
fi

# ---- the images a node needs, and the server tarball ----------------------------
t0=$(date +%s)
ctx="$work/ctx"; mkdir -p "$ctx"
img() { # tag from files... : a one-binary image
  local tag=$1 from=$2; shift 2
  rm -rf "$ctx"/*; local f df="FROM $from"$'\n'"ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  for f in "$@"; do cp "${f%%:*}" "$ctx/"; df+=$'\n'"COPY $(basename "${f%%:*}") ${f#*:}"; done
  df+=$'\n'"${IMG_TAIL:-}"
  printf '%s\n' "$df" >"$ctx/Dockerfile"
  docker build -q -t "$tag" "$ctx" >/dev/null
}
v=$K8S_VERSION
IMG_TAIL= img "registry.k8s.io/kube-apiserver:$v" scratch "$k8s_bin/kube-apiserver:/usr/local/bin/kube-apiserver"
IMG_TAIL= img "registry.k8s.io/kube-controller-manager:$v" scratch "$k8s_bin/kube-controller-manager:/usr/local/bin/kube-controller-manager"
IMG_TAIL= img "registry.k8s.io/kube-scheduler:$v" scratch "$k8s_bin/kube-scheduler:/usr/local/bin/kube-scheduler"
# kube-proxy and kindnetd need iptables/nft/conntrack: the base has them
IMG_TAIL='ENTRYPOINT []' img "registry.k8s.io/kube-proxy:$v" "$base_image" "$k8s_bin/kube-proxy:/usr/local/bin/kube-proxy"
IMG_TAIL= img "registry.k8s.io/etcd:pwkind" scratch "$k8s_bin/etcd:/usr/local/bin/etcd"
IMG_TAIL='ENTRYPOINT ["/coredns"]' img "registry.k8s.io/coredns/coredns:pwkind" scratch "$kind_cache/bin/coredns:/coredns"
IMG_TAIL='ENTRYPOINT ["/usr/local/bin/local-path-provisioner"]' img "docker.io/kindest/local-path-provisioner:pwkind" scratch \
  "$kind_cache/bin/local-path-provisioner:/usr/local/bin/local-path-provisioner"
docker load -q -i "$pause_tar" >/dev/null
docker load -q -i "$test_tar" >/dev/null
# `kind build node-image` insists on the default CNI image (it pulls what the
# archives lack). The cluster is made with disableDefaultCNI and never runs it;
# this stand-in says so should anyone apply kind's kindnet manifest.
IMG_TAIL='ENTRYPOINT []
CMD ["sh", "-c", "echo not kindnetd: podwarp test/e2e/kind builds no kindnetd, up.sh wires ptp + host-local itself >&2; exit 1"]' \
  img "docker.io/kindest/kindnetd:pwkind" localhost/pwe2e/test:1

# the names kind v0.33.0 and this kubeadm want
"$kind_cache/bin/kubeadm" config images list --kubernetes-version "$v" >"$work/required"
cni_image=$(grep -o 'docker.io/kindest/kindnetd:[^"]*' "$kind_src/pkg/build/nodeimage/const_cni.go" | head -1)
lp_image=$(grep -o 'docker.io/kindest/local-path-provisioner:[^"]*' "$kind_src/pkg/build/nodeimage/const_storage.go" | head -1)
lph_image=$(grep -o 'docker.io/kindest/local-path-helper:[^"]*' "$kind_src/pkg/build/nodeimage/const_storage.go" | head -1)
sandbox_image=$(grep -o 'sandbox_image = "[^"]*"' "$kind_src/images/base/files/etc/containerd/config.toml" | cut -d'"' -f2)
extra=()
tagas() { docker tag "$1" "$2"; extra+=("$2"); }
tagas docker.io/kindest/kindnetd:pwkind "$cni_image"
tagas docker.io/kindest/local-path-provisioner:pwkind "$lp_image"
tagas localhost/pwe2e/test:1 "$lph_image"
tagas localhost/pwe2e/pause:1 "$sandbox_image"
tagas localhost/pwe2e/pause:1 "$(grep /pause: "$work/required")"
tagas registry.k8s.io/etcd:pwkind "$(grep /etcd: "$work/required")"
tagas registry.k8s.io/coredns/coredns:pwkind "$(grep /coredns: "$work/required")"

srv="$work/srv/kubernetes"; mkdir -p "$srv/server/bin"
echo "$v" >"$srv/version"
cp "$kind_cache/bin/kubeadm" "$k8s_bin/kubelet" "$k8s_bin/kubectl" "$srv/server/bin/"
# A release's kube-apiserver.tar holds one image; here it also carries the
# images kind would otherwise pull (etcd, coredns, pause, kindnetd,
# local-path-*): kind takes every tag of the four archives as built, and
# `ctr import` loads them all. docker save drops "docker.io/" from names;
# kind compares full names, so they are put back.
docker save -o "$srv/server/bin/kube-apiserver.tar" "registry.k8s.io/kube-apiserver:$v" "${extra[@]}"
for c in kube-controller-manager kube-scheduler kube-proxy; do docker save -o "$srv/server/bin/$c.tar" "registry.k8s.io/$c:$v"; done
python3 "$here/fix-archive-names.py" "$srv/server/bin/kube-apiserver.tar"
tar -C "$work/srv" -c kubernetes | gzip -1 >"$work/kubernetes-server-linux-amd64.tar.gz"  # kind wants gzip
rm -rf "$work/srv"
pwk_log "images and server tarball in $(( $(date +%s) - t0 ))s"

t0=$(date +%s)
TMPDIR=$work nice -n 10 kind build node-image --type file --base-image "$base_image" --image "$node_image" \
  "$work/kubernetes-server-linux-amd64.tar.gz" >&2
docker save -o "$node_tar.tmp" "$node_image" && mv "$node_tar.tmp" "$node_tar"
pwk_log "node image built in $(( $(date +%s) - t0 ))s; all in $(( $(date +%s) - t_all ))s"
echo "$node_tar"; echo "$node_image"; echo "$podwarp_tar"
