#!/usr/bin/env bash
# Starts a private Docker engine and a kind cluster from deploy/kind.yaml on it,
# with the node image of build.sh and podwarp:dev loaded. Prints the run
# directory; its `env` file says how to reach both:
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
node_tar=${built[0]} node_image=${built[1]}
img_cache=${PODWARP_IMAGE_CACHE:-/var/cache/podwarp/images}

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
docker load -q -i "$img_cache/podwarp.tar" >&2   # docker.io/library/podwarp:dev, as deploy/podwarp.yaml names it
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
if ! kind create cluster --name "$cluster" --config "$repo/deploy/kind.yaml" --image "$node_image" \
  --kubeconfig "$run/kubeconfig" --wait 300s --retain >&2; then
  pwk_log "kind create cluster failed; the control-plane node's journal:"
  docker exec "$cluster-control-plane" journalctl -b --no-pager 2>/dev/null | tail -80 >&2 || docker logs "$cluster-control-plane" 2>&1 | tail -40 >&2 || true
  exit 1
fi
pwk_log "cluster $cluster up in $(( $(date +%s) - t0 ))s; all in $(( $(date +%s) - t_all ))s"
ok=1
echo "$run"
