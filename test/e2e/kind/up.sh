#!/usr/bin/env bash
# Starts a private Docker engine and a kind cluster from deploy/kind.yaml on it,
# with the node image of build.sh and podwarp:dev loaded. Prints the run
# directory; its `env` file says how to reach both.
#
# The one difference from deploy/kind.yaml: the cluster is made with
# networking.disableDefaultCNI: true (a copy of the file, changed at run time),
# and this script wires the pod network the way kindnetd does, without
# kindnetd (its module is not on the Go module proxy; no source of it is
# committed): on each node a CNI config for the standard ptp + host-local
# plugins (from the base image: Debian's containernetworking-plugins) with the
# node's podCIDR, and a route to every other node's podCIDR via that node's IP.
# Pods get what kindnet gives them and what podwarp targets: a veth, a /32
# route on the node, the node side's address as their gateway. Not done
# (kindnetd does them; no test needs them): masquerade of pod traffic leaving
# the cluster network, and kindnetd's NetworkPolicy enforcement.
#
#
#   test/e2e/kind/up.sh               # e.g. /run/pwkind-3fa2c1
#   . /run/pwkind-3fa2c1/env          # DOCKER_HOST, KUBECONFIG, PATH (kind, docker)
#   kubectl get nodes -o wide
#   test/e2e/kind/down.sh /run/pwkind-3fa2c1
#
# On failure it takes down what it started. Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
. "$here/lib.sh"
t_all=$(date +%s)
mapfile -t built < <(bash "$here/build.sh")
node_tar=${built[0]} node_image=${built[1]} podwarp_tar=${built[2]}
[[ -n ${built[2]:-} ]] || { pwk_log "build.sh failed"; exit 1; }

id="$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
run="/run/pwkind-$id"
cluster="pwkind-$id"
ok=0
on_exit() { ((ok)) || { pwk_log "failed; taking down $run"; bash "$here/down.sh" "$run" || true; }; }
trap on_exit EXIT
t0=$(date +%s)
pwk_dockerd_start "$id"
pwk_log "dockerd up in $(( $(date +%s) - t0 ))s"
t0=$(date +%s)
docker load -q -i "$node_tar" >&2 &
l1=$!
docker load -q -i "$podwarp_tar" >&2   # docker.io/library/podwarp:dev, as deploy/podwarp.yaml names it
# the scenarios' traffic image (localhost/pwe2e/test:1: busybox + pwperf), as current as this checkout
test_tar=$(bash "$here/../cluster/images.sh" | sed -n 2p)
[[ -s $test_tar ]] || { pwk_log "../cluster/images.sh gave no test image"; exit 1; }
docker load -q -i "$test_tar" >&2
wait $l1
pwk_log "images loaded in $(( $(date +%s) - t0 ))s"

cat >"$run/env" <<EOF
export RUN=$run
export PWKIND_RUN=$run
export PWKIND_CLUSTER=$cluster
export PODWARP_KIND_NODE_IMAGE=$node_image
export DOCKER_HOST=$DOCKER_HOST
export KUBECONFIG=$run/kubeconfig
export PATH=$PATH
EOF
ln -sfn "$run" /run/pwkind-current

t0=$(date +%s)
# the name of kind's docker network, so that runs on other engines never meet
export KIND_EXPERIMENTAL_DOCKER_NETWORK="$cluster"
echo "export KIND_EXPERIMENTAL_DOCKER_NETWORK=$cluster" >>"$run/env"
# deploy/kind.yaml with the default CNI off (see the header)
grep -q '^  disableDefaultCNI: false$' "$repo/deploy/kind.yaml" || { pwk_log "deploy/kind.yaml: no 'disableDefaultCNI: false' line to turn"; exit 1; }
sed 's/^  disableDefaultCNI: false$/  disableDefaultCNI: true/' "$repo/deploy/kind.yaml" >"$run/kind.yaml"
journal() {
  pwk_log "$1; the control-plane node's journal:"
  docker exec "$cluster-control-plane" journalctl -b --no-pager 2>/dev/null | tail -80 >&2 || docker logs "$cluster-control-plane" 2>&1 | tail -40 >&2 || true
}
# no --wait: without a CNI config no node becomes Ready; the network is wired below
if ! kind create cluster --name "$cluster" --config "$run/kind.yaml" --image "$node_image" \
  --kubeconfig "$run/kubeconfig" --retain >&2; then
  journal "kind create cluster failed"
  exit 1
fi
export KUBECONFIG=$run/kubeconfig
pwk_log "kind create cluster (no CNI) in $(( $(date +%s) - t0 ))s"

# ---- the pod network, as kindnetd wires it ----------------------------------
t0=$(date +%s)
mapfile -t nodes < <(kind get nodes --name "$cluster" | sort)
declare -A cidr ip
for n in "${nodes[@]}"; do
  for _ in $(seq 1 120); do   # the controller-manager allocates it once the node registered
    cidr[$n]=$(kubectl get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true)
    [[ -n ${cidr[$n]} ]] && break
    sleep 1
  done
  ip[$n]=$(kubectl get node "$n" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
  [[ -n ${cidr[$n]} && -n ${ip[$n]} ]] || { journal "node $n: no podCIDR or InternalIP"; exit 1; }
done
for n in "${nodes[@]}"; do
  # kindnetd's template (10-kindnet.conflist): ptp, host-local, a default route,
  # the MTU of the node's interface to the cluster network, portmap
  for p in ptp host-local portmap; do
    docker exec "$n" test -x "/opt/cni/bin/$p" || { pwk_log "node $n: no /opt/cni/bin/$p in the node image"; exit 1; }
  done
  mtu=$(docker exec "$n" cat /sys/class/net/eth0/mtu)
  printf '%s\n' '{' '  "cniVersion": "0.3.1",' '  "name": "pwkind",' '  "plugins": [' \
    '    { "type": "ptp", "ipMasq": false, "mtu": '"$mtu"',' \
    '      "ipam": { "type": "host-local", "dataDir": "/run/cni-ipam-state", "routes": [ { "dst": "0.0.0.0/0" } ],' \
    '                "ranges": [ [ { "subnet": "'"${cidr[$n]}"'" } ] ] } },' \
    '    { "type": "portmap", "capabilities": { "portMappings": true } }' '  ]' '}' |
    docker exec -i "$n" sh -c 'mkdir -p /etc/cni/net.d && cat >/etc/cni/net.d/.pwkind.tmp && mv /etc/cni/net.d/.pwkind.tmp /etc/cni/net.d/10-pwkind.conflist'
  for m in "${nodes[@]}"; do
    [[ $m == "$n" ]] || docker exec "$n" ip route replace "${cidr[$m]}" via "${ip[$m]}"
  done
  pwk_log "node $n: podCIDR ${cidr[$n]}, IP ${ip[$n]}, ptp + host-local, routes to the other nodes' podCIDRs"
done
if ! kubectl wait --for=condition=Ready nodes --all --timeout=300s >&2; then
  journal "nodes not Ready after the CNI config"
  exit 1
fi
pwk_log "cluster $cluster up (pod network wired in $(( $(date +%s) - t0 ))s); all in $(( $(date +%s) - t_all ))s"
ok=1
echo "$run"
