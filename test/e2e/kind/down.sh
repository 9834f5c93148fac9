#!/usr/bin/env bash
# Takes down what up.sh started: the kind cluster, the Docker engine, its
# containers, networks, bridges, mounts, cgroups and directories.
#   down.sh [RUN]     RUN defaults to /run/pwkind-current
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
run=${1:-$(readlink -f /run/pwkind-current 2>/dev/null || true)}
[[ -n $run && $run == /run/pwkind-* ]] || { pwk_log "no run directory (give /run/pwkind-<id>)"; exit 0; }
id=${run#/run/pwkind-}
t0=$(date +%s)
export DOCKER_HOST="unix://$run/docker.sock"
if [[ -S $run/docker.sock ]] && docker info >/dev/null 2>&1; then
  kind delete cluster --name "pwkind-$id" --kubeconfig "$run/kubeconfig" >&2 2>&1 || true
fi
pwk_dockerd_stop "$id"
[[ $(readlink /run/pwkind-current 2>/dev/null) == "$run" ]] && rm -f /run/pwkind-current
# what must be gone now
left=$( (grep -E "pwkind-$id" /proc/self/mounts || true; ls -d /sys/fs/cgroup/*/pwkind-"$id" 2>/dev/null || true; [[ -e $run ]] && echo "$run") )
[[ -z $left ]] || pwk_log "still there after down: $left"
pwk_log "down in $(( $(date +%s) - t0 ))s"
