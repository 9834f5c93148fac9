#!/usr/bin/env bash
# Downloads (once) and extracts Debian kernels for the kernel matrix, with a
# private apt configuration: the machine's own apt sources, lists and cache
# are never touched. Cache: $PODWARP_KERNEL_CACHE (/var/cache/podwarp/kernels).
#
#   devtools/vm/kernels.sh 5.10 6.1 6.12   → prints "<short> <dir>" per kernel,
#   where <dir> holds vmlinuz and lib/modules/<version>/.
# A second run with the same kernels downloads nothing. Installs kmod
# (depmod) and debian-archive-keyring when missing (devtools/vm/need.sh).
set -euo pipefail
. "$(dirname "$0")/need.sh"

CACHE=${PODWARP_KERNEL_CACHE:-/var/cache/podwarp/kernels}
APT=$CACHE/apt
mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/etc"

# the host serving Debian on this machine (deb822 or one-line sources), else deb.debian.org
mirror() {
  local m
  m=$(grep -hoE '^URIs:[[:space:]]*https?://[^[:space:]]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')
  [ -n "$m" ] || m=$(grep -hoE '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+/debian/?[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 | grep -oE 'https?://[^[:space:]]+')
  echo "${m:-http://deb.debian.org/debian}" | sed 's:/*$::'
}
MIRROR=$(mirror)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
need "$KEYRING" debian-archive-keyring depmod kmod dpkg-deb dpkg
cat >"$APT/etc/sources.list" <<SRC
deb [signed-by=$KEYRING] $MIRROR bullseye main
deb [signed-by=$KEYRING] $MIRROR bullseye-updates main
deb [signed-by=$KEYRING] ${MIRROR%/debian}/debian-security bullseye-security main
deb [signed-by=$KEYRING] $MIRROR bookworm main
deb [signed-by=$KEYRING] $MIRROR bookworm-updates main
deb [signed-by=$KEYRING] ${MIRROR%/debian}/debian-security bookworm-security main
deb [signed-by=$KEYRING] $MIRROR bookworm-backports main
SRC

aptx() { aptopt apt-get -q "$@"; }
aptc() { aptopt apt-cache "$@"; }
aptopt() {
  local tool=$1; shift
  "$tool" \
    -o Dir::Etc::sourcelist="$APT/etc/sources.list" -o Dir::Etc::sourceparts=- \
    -o Dir::State::Lists="$APT/lists" -o Dir::Cache::archives="$APT/archives" \
    -o Dir::Cache::pkgcache="$APT/pkgcache.bin" -o Dir::Cache::srcpkgcache="$APT/srcpkgcache.bin" \
    -o Dir::State::status=/dev/null -o APT::Architecture=amd64 -o APT::Architectures::=amd64 \
    -o Acquire::Languages=none -o APT::Sandbox::User=root "$@"
}

# a kernel short name → regex of its image package (6.12: bookworm-backports,
# or bookworm itself since 12.12)
pattern() {
  case "$1" in
    5.10) echo '^linux-image-5\.10\.0-[0-9]+-amd64$' ;;
    6.1) echo '^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
    6.12) echo '^linux-image-6\.12\.[0-9]+\+(deb12|bpo)-amd64$' ;;
    *) echo "kernels: unknown kernel '$1' (known: 5.10 6.1 6.12)" >&2; return 1 ;;
  esac
}

# the newest package name matching: by ABI number/version in the name
newest() { aptc pkgnames linux-image- 2>/dev/null | grep -E "$1" | sort -V | tail -n1 || true; }

updated=0
for k in "$@"; do
  pat=$(pattern "$k")
  dir=$(ls -d "$CACHE/$k"/*/ 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$dir" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/.complete" ]; then
    echo "$k ${dir%/}"; continue
  fi
  if [ $updated = 0 ]; then
    echo "kernels: apt-get update (private lists in $APT/lists, mirror $MIRROR)" >&2
    aptx -qq update >&2
    updated=1
  fi
  pkg=$(newest "$pat")
  [ -n "$pkg" ] || { echo "kernels: no package matches $pat" >&2; exit 1; }
  echo "kernels: downloading $pkg" >&2
  (cd "$APT/archives" && aptx -qq download "$pkg" >&2)
  deb=$(ls -t "$APT/archives/${pkg}"_*.deb | head -n1)
  ver=${pkg#linux-image-}; ver=${ver%-unsigned}
  out=$CACHE/$k/$ver
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  dpkg-deb -x "$deb" "$out.tmp/root"
  mv "$out.tmp/root/boot/vmlinuz-$ver" "$out.tmp/vmlinuz"
  mkdir -p "$out.tmp/lib/modules"
  mv "$out.tmp/root/lib/modules/$ver" "$out.tmp/lib/modules/$ver"
  cp "$out.tmp/root/boot/config-$ver" "$out.tmp/config" 2>/dev/null || true
  rm -rf "$out.tmp/root"
  # modules.dep for modprobe inside the VM
  depmod -b "$out.tmp" "$ver"
  touch "$out.tmp/.complete"
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$k $out"
done
