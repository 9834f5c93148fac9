#!/usr/bin/env bash
# One real single-node Kubernetes cluster from upstream parts, for podwarp's e2e:
# etcd, kube-apiserver (TLS, RBAC, service-account tokens), kube-controller-manager,
# kube-scheduler, kubelet (cgroupfs driver), kube-proxy (iptables, or nftables with
# PWE2E_PROXY_MODE=nftables), containerd + runc from Debian, CNI ptp + host-local
# laid out as kindnet does.
#
#   test/e2e/cluster/up.sh            # prints the run directory; $RUN/env for scripts
#   . $RUN/env; $KUBECTL get nodes    # kubectl wrapper that enters the node
#   test/e2e/cluster/down.sh [$RUN]   # removes everything (also run on failure here)
#
# Isolation on a shared machine: the node is its own network namespace
# (ip netns pwe2e-ID: a veth pair inside it holds the node IP, the pods' veths, kube-proxy's
# rules) and its own mount namespace (slave of the host's: a private bpffs at
# /sys/fs/bpf, tmpfs at /run (pod netns pins, containerd's shims, podwarp's
# /run/podwarp report), /var/log and /var/lib/cni), so
# nothing a component mounts, pins or writes to iptables or nftables is seen by the host.
# Cgroups are real and shared: the kubelet's cgroup root is /pwe2e-ID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)

ID=${PWE2E_ID:-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}
BASE=${PWE2E_BASE:-/var/lib/podwarp-e2e}
RUN=$BASE/$ID
NS=pwe2e-$ID                 # node network namespace (ip netns)
NODE=pwe2e-$ID               # node name
CGROOT=/pwe2e-$ID            # kubelet cgroup root in every hierarchy
NODE_IP=10.152.0.2           # on a link inside $NS only
SERVICE_CIDR=10.150.0.0/16   # not the sandbox's 10.97.0.0/16 VIPs
CLUSTER_CIDR=10.151.0.0/16   # not the sandbox's 10.200-249.x pod ranges
POD_CIDR=10.151.0.0/24
PROXY_MODE=${PWE2E_PROXY_MODE:-iptables}
case $PROXY_MODE in
  iptables) ;;
  nftables) command -v nft >/dev/null || { echo "up.sh: kube-proxy's nftables mode needs nft (apt-get install nftables)" >&2; exit 2; } ;;
  *) echo "up.sh: PWE2E_PROXY_MODE is iptables or nftables, not $PROXY_MODE" >&2; exit 2 ;;
esac
API_PORT=16443
ETCD_PORT=23790
ETCD_PEER=23800

log() { echo "up.sh [$(date +%T)] $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found ($2)"; }
need containerd "apt-get install containerd"; need runc "apt-get install runc"
need openssl openssl; need nsenter util-linux; need unshare util-linux; need iptables iptables
[[ -x /usr/lib/cni/ptp && -x /usr/lib/cni/host-local ]] || die "CNI plugins missing (apt-get install containernetworking-plugins)"
[[ $(id -u) == 0 ]] || die "run as root"

t_start=$(date +%s)
BIN=$("$here/build.sh") || die "build.sh"
# (a process substitution's exit status is lost: capture, then check; an empty list made
# every pod wait for a pause image containerd then tried to pull from localhost:80)
images_out=$("$here/images.sh") || die "images.sh failed"
mapfile -t IMAGES <<<"$images_out"
[ "${#IMAGES[@]}" -eq 3 ] && [ -n "${IMAGES[0]}" ] || die "images.sh listed ${#IMAGES[@]} tarballs, expected 3: ${IMAGES[*]}"

mkdir -p "$RUN"/{pki,logs,pids,ns,etcd,kubelet,cni/net.d,cni/ipam,containerd,pod-logs}
ln -sfn "$RUN" "$BASE/current"
cleanup_on_fail() {
  local rc=$?
  if ((rc != 0)); then
    log "failed (exit $rc): tearing down; logs copied to /tmp/pwe2e-$ID-logs"
    cp -r "$RUN/logs" "/tmp/pwe2e-$ID-logs" 2>/dev/null || true
    "$here/down.sh" "$RUN" >&2 || true
  fi
}
trap cleanup_on_fail EXIT

cat > "$RUN/env" <<EOF
# written by test/e2e/cluster/up.sh
RUN=$RUN
PWE2E_ID=$ID
NS=$NS
NODE=$NODE
NODE_IP=$NODE_IP
CGROOT=$CGROOT
BIN=$BIN
SERVICE_CIDR=$SERVICE_CIDR
POD_CIDR=$POD_CIDR
PROXY_MODE=$PROXY_MODE
KUBECONFIG_ADMIN=$RUN/admin.kubeconfig
KUBECTL=$RUN/kubectl
EOF

# ---------- namespaces ----------
ip netns add "$NS"
in_net() { nsenter --net="/run/netns/$NS" -- "$@"; }
in_node() { nsenter --net="/run/netns/$NS" --mount="$RUN/ns/mnt" -- "$@"; }
in_net ip link set lo up
# the node's "uplink": a veth pair, both ends in $NS (this kernel has no dummy links)
in_net ip link add pwe2e0 type veth peer name pwe2e1
in_net ip link set pwe2e1 up
in_net ip addr add "$NODE_IP/24" dev pwe2e0
in_net ip link set pwe2e0 up
in_net ip route add default dev pwe2e0   # nothing leaves $NS: the peer drops it
in_net sysctl -qw net.ipv4.ip_forward=1
# a persistent mount namespace needs a private mount for its file
mount --bind "$RUN/ns" "$RUN/ns"; mount --make-private "$RUN/ns"
touch "$RUN/ns/mnt"
unshare --mount="$RUN/ns/mnt" --propagation slave true
in_node sh -ec "
  # the host's bpffs out of sight (containerd checks the first mount at a path:
  # it must be ours, shared, for the agent's Bidirectional mount)
  while mountpoint -q /sys/fs/bpf; do umount -l /sys/fs/bpf; done
  mount -t bpf bpf /sys/fs/bpf && mount --make-shared /sys/fs/bpf
  for d in /run /var/log /var/lib/cni; do mkdir -p \$d; mount -t tmpfs -o size=1g,mode=755 pwe2e \$d; done
  mount --bind '$RUN/kubelet' '$RUN/kubelet' && mount --make-rshared '$RUN/kubelet'
"

# ---------- cgroups: the kubelet's root must exist in every v1 hierarchy ----------
while read -r _ mnt type opts _; do
  [[ $type == cgroup ]] || continue
  mkdir -p "$mnt$CGROOT"
  if [[ ,$opts, == *,cpuset,* ]]; then
    cat "$mnt/cpuset.cpus" > "$mnt$CGROOT/cpuset.cpus"; cat "$mnt/cpuset.mems" > "$mnt$CGROOT/cpuset.mems"
  fi
done < /proc/mounts

# ---------- certificates ----------
pki=$RUN/pki
ssl() { openssl "$@" 2>>"$RUN/logs/openssl.log"; }
ssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pwe2e-ca-$ID" -keyout "$pki/ca.key" -out "$pki/ca.crt"
cert() { # name CN O [SAN]
  local name=$1 cn=$2 o=$3 san=${4:-}
  local subj="/CN=$cn"; [[ -n $o ]] && subj="/O=$o/CN=$cn"
  {
    echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"; else echo "extendedKeyUsage=clientAuth"; fi
  } > "$pki/$name.ext"
  ssl req -new -newkey rsa:2048 -nodes -subj "$subj" -keyout "$pki/$name.key" -out "$pki/$name.csr"
  ssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 2 -extfile "$pki/$name.ext" -out "$pki/$name.crt"
}
svc_ip=10.150.0.1
cert apiserver kube-apiserver "" "IP:$NODE_IP,IP:127.0.0.1,IP:$svc_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert admin admin system:masters
cert kubelet "system:node:$NODE" system:nodes "IP:$NODE_IP,DNS:$NODE"
cert kube-proxy system:kube-proxy ""
cert controller-manager system:kube-controller-manager ""
cert scheduler system:kube-scheduler ""
ssl genrsa -out "$pki/sa.key" 2048; ssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

kubeconfig() { # name user
  cat > "$RUN/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pwe2e
  cluster: {server: "https://$NODE_IP:$API_PORT", certificate-authority: "$pki/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: pwe2e
  context: {cluster: pwe2e, user: $1}
current-context: pwe2e
EOF
}
for c in admin kubelet kube-proxy controller-manager scheduler; do kubeconfig "$c" "$c"; done
cat > "$RUN/kubectl" <<EOF
#!/bin/sh
# kubectl for the e2e cluster $ID (its API is only reachable inside the node's netns)
exec nsenter --net=/run/netns/$NS -- "$BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" "\$@"
EOF
chmod +x "$RUN/kubectl"
KUBECTL=$RUN/kubectl

# ---------- processes ----------
start() { # name cmd...: in the node's namespaces, own session, log and pid file
  local name=$1; shift
  # no function or subshell between: $! must be the process itself
  nsenter --net="/run/netns/$NS" --mount="$RUN/ns/mnt" -- setsid "$@" >"$RUN/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/pids/$name.pid"
}
wait_for() { # what seconds cmd...
  local what=$1 secs=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < end )) || die "$what not ready after ${secs}s"
    sleep 0.5
  done
  log "$what ready"
}
alive() { kill -0 "$(cat "$RUN/pids/$1.pid")" 2>/dev/null || { tail -20 "$RUN/logs/$1.log" >&2; return 1; }; }

start etcd "$BIN/etcd" --name pwe2e --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "pwe2e=http://127.0.0.1:$ETCD_PEER" --listen-metrics-urls "" --log-level warn
wait_for etcd 30 in_net bash -c "exec 3<>/dev/tcp/127.0.0.1/$ETCD_PORT"

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address "$NODE_IP" --secure-port "$API_PORT" --advertise-address "$NODE_IP" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --allow-privileged=true --profiling=false
wait_for kube-apiserver 120 "$KUBECTL" get --raw /readyz

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$RUN/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 20257 \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" --use-service-account-credentials \
  --allocate-node-cidrs --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 --service-cluster-ip-range "$SERVICE_CIDR" \
  --leader-elect=false --controllers '*' --profiling=false \
  --kube-api-qps 500 --kube-api-burst 1000   # EndpointSlices for thousands of Services (bench-services.sh)
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$RUN/scheduler.kubeconfig" \
  --authentication-kubeconfig "$RUN/scheduler.kubeconfig" --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 20259 --leader-elect=false --profiling=false

# ---------- containerd + CNI ----------
CSOCK=$RUN/containerd/containerd.sock
cat > "$RUN/cni/net.d/10-pwe2e.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "pwe2e",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN/cni/ipam",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
# CAP_SYS_RESOURCE is bit 24 of the effective set
RESTRICT_OOM=true
(( (16#$(awk '/^CapEff/{print $2}' /proc/self/status) >> 24) & 1 )) && RESTRICT_OOM=false
cat > "$RUN/containerd/config.toml" <<EOF
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CSOCK"
[ttrpc]
  address = "$CSOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pwe2e/pause:1"
  # where root lacks CAP_SYS_RESOURCE (this machine's bounding set), a negative
  # oom_score_adj (the kubelet asks -998 for sandboxes) fails runc init: clamp
  # it to containerd's own
  restrict_oom_score_adj = $RESTRICT_OOM
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
EOF
start containerd containerd --config "$RUN/containerd/config.toml"
wait_for containerd 30 in_node ctr --address "$CSOCK" version
# images in the background while the node starts (podwarp's is ~1 GB: ~50 s)
import_pids=()
for t in "${IMAGES[@]}"; do
  in_node ctr --address "$CSOCK" -n k8s.io images import --all-platforms "$t" >"$RUN/logs/ctr-import-$(basename "$t").log" 2>&1 &
  import_pids+=($!)
done

# ---------- kubelet + kube-proxy ----------
cat > "$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$pki/kubelet.crt"
tlsPrivateKeyFile: "$pki/kubelet.key"
address: "$NODE_IP"
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
cgroupRoot: "$CGROOT"
# this host mounts cgroup v1 controllers at /sys/fs/cgroup (cgroup2 beside them)
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: "unix://$CSOCK"
podLogsDir: "$RUN/pod-logs"
clusterDomain: cluster.local
resolvConf: ""
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
start kubelet "$BIN/kubelet" --config "$RUN/kubelet.yaml" --kubeconfig "$RUN/kubelet.kubeconfig" \
  --root-dir "$RUN/kubelet" --node-ip "$NODE_IP" --hostname-override "$NODE" --v 1
cat > "$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$RUN/kube-proxy.kubeconfig"}
hostnameOverride: "$NODE"
mode: $PROXY_MODE
clusterCIDR: "$CLUSTER_CIDR"
# kube-proxy's default metrics address, where the agent reads its /configz (its own netns: nothing else binds it)
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:20256
# a netns that is not the host's: conntrack table size is the host's to set
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
start kube-proxy "$BIN/kube-proxy" --config "$RUN/kube-proxy.yaml"

wait_for "node $NODE" 120 "$KUBECTL" wait --for=condition=Ready "node/$NODE" --timeout=2s
for p in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do alive "$p" || die "$p exited"; done
wait_for "default service account" 60 "$KUBECTL" -n default get serviceaccount default
for p in "${import_pids[@]}"; do wait "$p" || die "image import failed: $(tail -3 "$RUN"/logs/ctr-import-*.log)"; done
log "images: $(in_node ctr --address "$CSOCK" -n k8s.io images ls -q | grep -v '^sha256:' | tr '\n' ' ')"
trap - EXIT
log "cluster $ID up in $(( $(date +%s) - t_start ))s: . $RUN/env; \$KUBECTL get nodes"
echo "$RUN"
