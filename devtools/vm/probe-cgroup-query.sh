#!/usr/bin/env bash
# Evidence for the cgroup listing fallback (loader/bpftool.ts cgroupShow):
# attaches pw_sockops to a fresh child cgroup and runs `bpftool -j cgroup
# show CG` and `… effective`, printing each exit code and output. Uses only
# a child cgroup and pins it creates; removes them. Needs build/bpf/pw_sockops.o;
# installs bpftool when missing (devtools/vm/need.sh).
set -u
cd "$(dirname "$0")/../.."
. devtools/vm/need.sh
need bpftool bpftool || exit 1
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
bpffs=$(awk '$3 == "bpf" { print $2; exit }' /proc/mounts)
id=pwprobe$$
cg=$cg2/$id pins=$bpffs/$id
cleanup() {
  bpftool cgroup detach "$cg" sock_ops pinned "$pins/progs/pw_sockops" 2>/dev/null
  rmdir "$cg" 2>/dev/null
  rm -rf "$pins"
}
trap cleanup EXIT
mkdir -p "$cg" "$pins/maps"
bpftool prog loadall build/bpf/pw_sockops.o "$pins/progs" pinmaps "$pins/maps" || { echo "probe: load failed"; exit 1; }
bpftool cgroup attach "$cg" sock_ops pinned "$pins/progs/pw_sockops" multi || { echo "probe: attach failed"; exit 1; }
echo "kernel $(uname -r), $(bpftool version | head -n1)"
out=$(bpftool -j cgroup show "$cg" 2>&1); rc=$?
echo "bpftool -j cgroup show CG            → exit $rc: $out"
out=$(bpftool -j cgroup show "$cg" effective 2>&1); rc=$?
echo "bpftool -j cgroup show CG effective  → exit $rc: $out"
