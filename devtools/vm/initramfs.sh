#!/usr/bin/env bash
# Builds the VM's initramfs for one extracted kernel (devtools/vm/kernels.sh):
# a static busybox, devtools/vm/init, and the modules the boot needs (virtio,
# 9p, overlay) with their dependencies, in load order, uncompressed.
# Installs busybox-static, cpio and the modules' decompressor when missing
# (devtools/vm/need.sh).
#
#   devtools/vm/initramfs.sh <kernel-dir> <out.cpio.gz>
set -euo pipefail
kdir=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/need.sh"
ver=$(ls "$kdir/lib/modules")
mods=$kdir/lib/modules/$ver
bb=/bin/busybox
# a static busybox (busybox-static replaces a dynamic busybox package)
static_bb() { case "$(ldd "$bb" 2>&1 || true)" in *'not a dynamic'*) return 0 ;; *) return 1 ;; esac; }
need static_bb busybox-static cpio cpio gzip gzip

stage=$(mktemp -d /tmp/podwarp-initramfs.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,lower,rw,newroot,modules}
cp "$bb" "$stage/bin/busybox"
cp "$here/init" "$stage/init"
chmod 755 "$stage/init"

# modules.dep: "kernel/fs/9p/9p.ko: dep1.ko dep2.ko" — emit dependencies first
declare -A seen=()
order=()
dep_of() { grep -E "^([^:]*/)?$1\.ko(\.xz|\.zst|\.gz)?:" "$mods/modules.dep" | head -n1; }
want() {
  local name=$1 line file deps d
  line=$(dep_of "$name") || true
  [ -n "$line" ] || return 0 # built in (or absent): nothing to load
  file=${line%%:*}
  [ -z "${seen[$file]:-}" ] || return 0
  seen[$file]=1
  deps=${line#*:}
  for d in $deps; do
    d=$(basename "$d"); d=${d%.xz}; d=${d%.zst}; d=${d%.gz}; want "${d%.ko}"
  done
  order+=("$file")
}
for m in virtio virtio_ring virtio_pci 9pnet_virtio 9p overlay; do want "$m"; done
: >"$stage/modules/order"
for f in "${order[@]}"; do
  base=$(basename "$f")
  case "$base" in
    *.xz) need xz xz-utils; xz -dc "$mods/$f" >"$stage/modules/${base%.xz}"; base=${base%.xz} ;;
    *.zst) need zstd zstd; zstd -qdc "$mods/$f" >"$stage/modules/${base%.zst}"; base=${base%.zst} ;;
    *.gz) gzip -dc "$mods/$f" >"$stage/modules/${base%.gz}"; base=${base%.gz} ;;
    *) cp "$mods/$f" "$stage/modules/$base" ;;
  esac
  echo "$base" >>"$stage/modules/order"
done
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$out.tmp"
mv "$out.tmp" "$out"
