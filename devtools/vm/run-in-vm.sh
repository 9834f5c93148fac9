#!/usr/bin/env bash
# Boots one extracted kernel (devtools/vm/kernels.sh) in qemu with this
# host's userland and runs a shell command in the project directory.
#
#   devtools/vm/run-in-vm.sh --kernel-dir DIR --out DIR [--timeout S] [--accel tcg|kvm]
#                            [--append 'KERNEL ARGS'] -- 'command'
#
# --append adds to the kernel command line (e.g. lockdown=confidentiality).
# The VM: no network device (-nic none), 3 GiB, 2 vCPUs, host / read-only over
# 9p under a tmpfs overlay, a snapshot of the project (copied at start, so
# edits made during a long run do not leak into it; .git left out) read-write
# at the project's own path, OUT at /mnt/pwvm (the command writes results
# there). Leaves in OUT: console.log,
# status (the command's exit code; absent when the VM died or timed out),
# boot_s (uptime when the command started), run_s, accel, cmdline (the
# kernel's), lockdown (the guest's /sys/kernel/security/lockdown). Exit
# code: the command's, 124 on timeout, 125 when the VM died without a status.
# qemu is always killed; nothing stays mounted (the mounts live in the VM).
# Installs qemu-system-x86 when missing, and kmod and iproute2 that the
# guest runs from this host's userland (devtools/vm/need.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
. "$here/need.sh"
timeout=1800 accel=${PODWARP_VM_ACCEL:-} kdir= out= append=
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel-dir) kdir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "run-in-vm: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$kdir" ] && [ -n "$out" ] && [ $# -eq 1 ] || { echo "usage: $0 --kernel-dir DIR --out DIR [--timeout S] [--accel tcg|kvm] [--append 'KERNEL ARGS'] -- 'command'" >&2; exit 2; }
kdir=$(cd "$kdir" && pwd)
ver=$(ls "$kdir/lib/modules")
mkdir -p "$out"; out=$(cd "$out" && pwd)
rm -f "$out/status" "$out/boot_s" "$out/run_s" "$out/lockdown"
need qemu-system-x86_64 qemu-system-x86 modprobe kmod ip iproute2

# the initramfs, rebuilt when its inputs change
initrd=$kdir/initramfs.cpio.gz
if [ ! -f "$initrd" ] || [ "$here/init" -nt "$initrd" ] || [ "$here/initramfs.sh" -nt "$initrd" ]; then
  "$here/initramfs.sh" "$kdir" "$initrd"
fi

printf '%s\n' "$1" >"$out/cmd"
[ -n "$accel" ] || accel=tcg
case "$accel" in
  kvm) acc=(-accel kvm -cpu host) ;;
  tcg) acc=(-accel tcg -cpu max) ;;
  *) echo "run-in-vm: --accel tcg|kvm" >&2; exit 2 ;;
esac
echo "$accel" >"$out/accel"

cmdline="console=ttyS0 panic=-1 oops=panic loglevel=4 mitigations=off${append:+ $append} pw.project=$project pw.moddir=$kdir/lib/modules/$ver"
echo "$cmdline" >"$out/cmdline"

qpid=
snap=
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill -KILL "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
  [ -z "$snap" ] || rm -rf "$snap"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
snap=$(mktemp -d /tmp/podwarp-vmtree.XXXXXX)
tar -C "$project" --exclude=./.git -cf - . | tar -C "$snap" -xf -

nice -n "${PODWARP_VM_NICE:-10}" qemu-system-x86_64 -nodefaults -no-user-config "${acc[@]}" \
  -m "${PODWARP_VM_MEM:-3G}" -smp 2 -nic none -no-reboot -display none -monitor none \
  -serial "file:$out/console.log" \
  -kernel "$kdir/vmlinuz" -initrd "$initrd" \
  -append "$cmdline" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  -virtfs "local,path=$snap,mount_tag=project,security_model=none,multidevs=remap" \
  -virtfs "local,path=$out,mount_tag=pwvm,security_model=none,multidevs=remap" &
qpid=$!
deadline=$((SECONDS + timeout))
while kill -0 "$qpid" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ]; then
    echo "run-in-vm: timeout after ${timeout}s, killing qemu" >&2
    kill -KILL "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    qpid=
    exit 124
  fi
  sleep 1
done
wait "$qpid" 2>/dev/null || true
qpid=
[ -f "$out/status" ] || { echo "run-in-vm: VM ended without a status (see $out/console.log)" >&2; exit 125; }
exit "$(cat "$out/status")"
