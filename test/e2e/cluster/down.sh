#!/usr/bin/env bash
# Tears down a cluster made by up.sh and leaves nothing of it: processes (pid
# files, then any process whose command line names the run directory), the
# node's mount namespace (private bpffs, tmpfs, pod volumes die with it), its
# network namespace (pods' veths, kube-proxy's rules: `kube-proxy --cleanup`
# first), the cgroups below /pwe2e-ID in every hierarchy, and the run directory.
#
#   test/e2e/cluster/down.sh [RUN_DIR]      # default: /var/lib/podwarp-e2e/current
# Safe to run twice and on a half-made cluster.
set -uo pipefail
BASE=${PWE2E_BASE:-/var/lib/podwarp-e2e}
RUN=${1:-$(readlink -f "$BASE/current" 2>/dev/null || true)}
[[ -n $RUN && -d $RUN ]] || { echo "down.sh: no run directory (${RUN:-none})" >&2; exit 0; }
RUN=$(readlink -f "$RUN")
ID=$(basename "$RUN")
[[ $ID =~ ^[0-9a-f]{6}$ && $RUN == "$BASE/$ID" ]] || { echo "down.sh: $RUN is not an up.sh run directory" >&2; exit 1; }
NS=pwe2e-$ID
CGROOT=/pwe2e-$ID
log() { echo "down.sh [$(date +%T)] $*" >&2; }
t0=$(date +%s)
BIN=$(. "$RUN/env" 2>/dev/null && echo "$BIN"); BIN=${BIN:-/nonexistent}

# kube-proxy's own cleanup of what it made (the netns goes anyway)
if [[ -e /run/netns/$NS && -x $BIN/kube-proxy ]]; then
  t=$(date +%s)
  nsenter --net="/run/netns/$NS" -- timeout 30 "$BIN/kube-proxy" --cleanup >"$RUN/logs/kube-proxy-cleanup.log" 2>&1 || true
  log "kube-proxy --cleanup: $(( $(date +%s) - t ))s, KUBE chains left in $NS: $(nsenter --net="/run/netns/$NS" iptables-save 2>/dev/null | grep -c '^:KUBE')"
fi

# processes: the ones up.sh started, node agents first, then everything that
# still names this run (containerd shims, containers' processes in our cgroups)
ours() {
  local p
  for p in kubelet kube-proxy kube-scheduler kube-controller-manager containerd kube-apiserver etcd; do
    [[ -f $RUN/pids/$p.pid ]] && cat "$RUN/pids/$p.pid"
  done
  # the components even without their pid files, and containerd's shims (they
  # outlive containerd by design): those whose program is one of ours and
  # whose command line names this run
  local exe f p
  for f in $(grep -lsF "$RUN/" /proc/[0-9]*/cmdline); do
    p=${f#/proc/}; p=${p%/cmdline}
    exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
    case $exe in "$BIN"/*|*/containerd|*/containerd-shim*) echo "$p" ;; esac
  done
  while read -r _ mnt type _; do
    [[ $type == cgroup || $type == cgroup2 ]] || continue
    [[ -d $mnt$CGROOT ]] || continue
    find "$mnt$CGROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  done < /proc/mounts
}
stop_all() {
  local sig=$1 pids
  pids=$(ours | grep -E '^[0-9]+$' | grep -vx "$$" | sort -un)
  [[ -z $pids ]] && return 1
  # shellcheck disable=SC2086
  kill -"$sig" $pids 2>/dev/null
  return 0
}
live() { ours | grep -E '^[0-9]+$' | grep -vx "$$" | sort -un | while read -r p; do kill -0 "$p" 2>/dev/null && echo "$p"; done; }
stop_all() { local pids; pids=$(live); [[ -z $pids ]] && return 1; kill -"$1" $pids 2>/dev/null; return 0; }
if stop_all TERM; then
  cand=$(live)
  for i in $(seq 1 40); do
    left=$(for p in $cand; do kill -0 "$p" 2>/dev/null && echo "$p"; done)
    [[ -z $left ]] && break; sleep 0.5
  done
  for i in 1 2 3 4 5 6; do stop_all KILL || break; sleep 0.5; done
  [[ -n $(live) ]] && log "WARNING: still running: $(live | tr '\n' ' ')"
fi

log "processes stopped"
# mount namespace: dropping its file frees it (and every mount in it)
if [[ -e $RUN/ns/mnt ]]; then umount "$RUN/ns/mnt" 2>/dev/null; fi
umount "$RUN/ns" 2>/dev/null
# anything of ours the host still sees (there should be none)
grep -F " $RUN" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" && log "unmounted $m"; done

# network namespace
if [[ -e /run/netns/$NS ]]; then ip netns del "$NS" && log "netns $NS deleted"; fi

# cgroups, deepest first; runc's may need a moment after its processes died
while read -r _ mnt type _; do
  [[ $type == cgroup || $type == cgroup2 ]] || continue
  [[ -d $mnt$CGROOT ]] || continue
  for try in 1 2 3 4 5 6; do
    find "$mnt$CGROOT" -depth -type d -exec rmdir {} + 2>/dev/null
    [[ -d $mnt$CGROOT ]] || break
    sleep 0.5
  done
  [[ -d $mnt$CGROOT ]] && log "WARNING: $mnt$CGROOT left: $(find "$mnt$CGROOT" -type d | head -5 | tr '\n' ' ')"
done < /proc/mounts

rm -rf "$RUN"
[[ $(readlink -f "$BASE/current" 2>/dev/null) == "$RUN" || ! -e $BASE/current ]] && rm -f "$BASE/current"
rmdir "$BASE" 2>/dev/null
log "cluster $ID removed in $(( $(date +%s) - t0 ))s"
