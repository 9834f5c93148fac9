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

# a pid file's pid, if that process still names this run (no reused pid)
pidof_() {
  local p
  [[ -f $RUN/pids/$1.pid ]] || return 0
  p=$(cat "$RUN/pids/$1.pid")
  tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline" | grep -qF "$RUN/" && echo "$p"
  return 0
}
# stop PIDS...: TERM, up to 10 s, then KILL
stop() {
  local p left i
  [[ $# -eq 0 ]] && return 0
  kill -TERM "$@" 2>/dev/null
  for i in $(seq 1 20); do
    left=(); for p in "$@"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    ((${#left[@]} == 0)) && return 0
    sleep 0.5
  done
  kill -KILL "${left[@]}" 2>/dev/null; sleep 0.3
}
# processes in the cgroups below our root (the pods' containers)
in_cgroups() {
  while read -r _ mnt type _; do
    [[ $type == cgroup || $type == cgroup2 ]] || continue
    [[ -d $mnt$CGROOT ]] || continue
    find "$mnt$CGROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  done < /proc/mounts | sort -un
}
# the components without their pid files, and containerd's shims (they outlive
# containerd by design): programs of ours whose command line names this run
named_ours() {
  local exe f p
  for f in $(grep -lsF "$RUN/" /proc/[0-9]*/cmdline); do
    p=${f#/proc/}; p=${p%/cmdline}
    [[ $p == "$$" ]] && continue
    exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
    case $exe in "$BIN"/*|*/containerd|*/containerd-shim*) echo "$p" ;; esac
  done
}

# 1. the node agents, so nothing re-creates what is removed next
stop $(pidof_ kubelet) $(pidof_ kube-proxy)
# 2. kube-proxy's own cleanup of its rules (the netns goes anyway)
if [[ -e /run/netns/$NS && -x $BIN/kube-proxy ]]; then
  t=$(date +%s)
  nsenter --net="/run/netns/$NS" -- timeout 30 "$BIN/kube-proxy" --cleanup >"$RUN/logs/kube-proxy-cleanup.log" 2>&1
  rc=$?
  chains=$(nsenter --net="/run/netns/$NS" iptables-save 2>/dev/null | grep -o '^:KUBE[^ ]*' | tr -d : | sort -u)
  log "kube-proxy --cleanup: exit $rc in $(( $(date +%s) - t ))s; KUBE chains left in $NS (removed with the netns): $(echo "$chains" | grep -c .) ($(echo "$chains" | grep -v -- '-SEP-\|-SVC-' | head -10 | tr '\n' ' '))"
fi
# 3. the pods' processes (test pods need no grace), then shims and components
for i in 1 2 3; do
  pids=$(in_cgroups); [[ -z $pids ]] && break
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null; sleep 0.3
done
stop $(pidof_ containerd) $(named_ours | grep -vx "$(pidof_ kube-apiserver)" | grep -vx "$(pidof_ etcd)")
stop $(pidof_ kube-controller-manager) $(pidof_ kube-scheduler)
stop $(pidof_ kube-apiserver)
stop $(pidof_ etcd)
left=$( (named_ours; in_cgroups) | sort -un | while read -r p; do kill -0 "$p" 2>/dev/null && echo "$p"; done)
if [[ -n $left ]]; then
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null; sleep 0.5
  log "killed stragglers: $(echo $left)"
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
cg_dirs() { while read -r _ mnt type _; do [[ ($type == cgroup || $type == cgroup2) && -d $mnt$CGROOT ]] && echo "$mnt$CGROOT"; done < /proc/mounts; }
for try in $(seq 1 20); do
  dirs=$(cg_dirs); [[ -z $dirs ]] && break
  # shellcheck disable=SC2086
  find $dirs -depth -type d -exec rmdir {} + 2>/dev/null
  [[ -z $(cg_dirs) ]] && break
  sleep 0.5
done
[[ -n $(cg_dirs) ]] && log "WARNING: cgroups left: $(for d in $(cg_dirs); do find "$d" -type d; done | head -5 | tr '\n' ' ')"

log "cgroups removed"
rm -rf "$RUN"
[[ $(readlink -f "$BASE/current" 2>/dev/null) == "$RUN" || ! -e $BASE/current ]] && rm -f "$BASE/current"
rmdir "$BASE" 2>/dev/null
log "cluster $ID removed in $(( $(date +%s) - t0 ))s"
