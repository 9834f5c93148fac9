#!/usr/bin/env bash
# kind's base image (images/base/Dockerfile of kind v0.33.0) as a root
# filesystem, without a registry: debootstrapped Debian bookworm instead of
# debian:trixie-slim, and Debian's packages instead of kind's source builds:
# containerd 1.6.20 (kind: 2.3.4), runc 1.1.5 (kind: 1.4.3), CNI plugins 1.1.1
# (kind: 1.9.1), no fuse-overlayfs snapshotter (rootless only). crictl v1.36.0
# is a Go build (build.sh). kind's own files (entrypoint, systemd units,
# containerd config, sysctls) are copied from the kind module unchanged, except:
#   - restrict_oom_score_adj = true when root lacks CAP_SYS_RESOURCE (as in
#     ../cluster/up.sh; otherwise runc fails every pod sandbox)
#   - the kubelet gets --fail-cgroupv1=false (Kubernetes 1.35+ refuses cgroup v1
#     by default; kind sets nothing; a hybrid host gives its nodes cgroup v1)
#   - on a hybrid host the entrypoint mounts cgroup2 at /sys/fs/cgroup/unified
#   - /usr/local/bin/ctr accepts `images import --label=` and `info` (ctr 1.6 does not)
#
#   base.sh ROOTFS KIND_FILES CRICTL CAP_SYS_RESOURCE(0|1)
set -euo pipefail
root=$1 files=$2 crictl=$3 cap_sys_resource=$4
pkgs=systemd,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,e2fsprogs
pkgs+=,bash,ca-certificates,curl,jq,procps,containerd,runc,containernetworking-plugins
# the debootstrap stage is cached by its package list (it takes minutes)
cache=${PODWARP_KIND_CACHE:-/var/cache/podwarp/kind}
stage="$cache/bookworm-$(echo "$pkgs" | sha256sum | cut -c1-12).tar"
mkdir -p "$root"
if [[ -s $stage ]]; then
  tar -C "$root" -xf "$stage"
else
  log=$(mktemp)
  nice -n 10 debootstrap --variant=minbase --include="$pkgs" bookworm "$root" http://deb.debian.org/debian >"$log" 2>&1 \
    || { tail -30 "$log" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$stage.tmp" . && mv "$stage.tmp" "$stage"
fi

# COPY --chmod lines of the Dockerfile
install -m 0755 "$files"/usr/local/bin/* "$root/usr/local/bin/"
mkdir -p "$root/kind/bin" "$root/LICENSES"
cp -r "$files/kind/." "$root/kind/" && find "$root/kind" -type f -exec chmod 0644 {} + && chmod 0755 "$root/kind" "$root/kind/bin" "$root"/kind/bin/*
install -m 0644 "$files"/LICENSES/* "$root/LICENSES/"
install -m 0644 "$files/etc/crictl.yaml" "$root/etc/"
install -m 0644 "$files"/etc/containerd/* "$root/etc/containerd/"
install -m 0644 "$files"/etc/default/* "$root/etc/default/"
install -m 0644 "$files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
mkdir -p "$root/etc/systemd/system/kubelet.service.d"
for f in "$files"/etc/systemd/system/*; do [[ -f $f ]] && install -m 0644 "$f" "$root/etc/systemd/system/"; done
install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"

# the first RUN: trim systemd as kind does
find "$root/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
  "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
  "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
chroot "$root" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
chroot "$root" systemctl mask systemd-binfmt.service >/dev/null 2>&1
mkdir -p "$root/etc/kubernetes/manifests"

# kind's binaries live in /usr/local; Debian's in /usr/bin
for b in containerd containerd-shim-runc-v2; do ln -sf "/usr/bin/$b" "$root/usr/local/bin/$b"; done
# `kind build node-image` imports with `ctr images import --label=…pinned=pinned`;
# ctr 1.6 has no --label there: this ctr imports without it and then pins
# every image of the namespace with `ctr images label` (what the flag does)
cat >"$root/usr/local/bin/ctr" <<'CTR'
#!/bin/bash
# ctr of Debian's containerd 1.6 + `images import --label=K=V` (podwarp test/e2e/kind/base.sh)
args=() labels=() ns=() import=0
for a in "$@"; do
  case $a in
    --label=*) labels+=("${a#--label=}") ;;
    --namespace=* | -n=*) ns=("$a"); args+=("$a") ;;
    import) import=1; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
# `ctr info` (kind waits for containerd with it) is not in ctr 1.6: `ctr version` asks the daemon too
for a in "$@"; do [[ $a == -* ]] && continue; [[ $a == info ]] && exec /usr/bin/ctr "${args[@]/#info/version}" >/dev/null; break; done
if ((import == 0 || ${#labels[@]} == 0)); then exec /usr/bin/ctr "$@"; fi
/usr/bin/ctr "${args[@]}" || exit
for img in $(/usr/bin/ctr "${ns[@]}" images list -q); do
  /usr/bin/ctr "${ns[@]}" images label "$img" "${labels[@]}" >/dev/null || exit
done
CTR
chmod 0755 "$root/usr/local/bin/ctr"
ln -sf /usr/sbin/runc "$root/usr/local/sbin/runc"
install -m 0755 "$crictl" "$root/usr/local/bin/crictl"
mkdir -p "$root/opt/cni/bin"
for p in host-local loopback ptp portmap; do cp "$root/usr/lib/cni/$p" "$root/opt/cni/bin/"; done
chroot "$root" sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer| length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
jq -e .hooks "$root/etc/containerd/cri-base.json" >/dev/null

# A hybrid host: Docker 20.10 with runc 1.1 gives the node the v1 hierarchies
# only, no cgroup2 (the host has it at /sys/fs/cgroup/unified). The entrypoint
# mounts it (the node's own cgroup namespace root) before systemd starts, so
# systemd runs hybrid as the host does and pods are in cgroup2 too, where
# podwarp attaches its socket hooks.
python3 - "$root/usr/local/bin/entrypoint" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
anchor = "    log_info 'detected cgroupns'\n"
add = anchor + """    # pwkind (podwarp test/e2e/kind/base.sh): mount the unified hierarchy on a hybrid host
    if grep -q '^0::' /proc/self/cgroup && ! findmnt -n -t cgroup2 /sys/fs/cgroup/unified >/dev/null; then
      log_info 'mounting cgroup2 at /sys/fs/cgroup/unified (hybrid host)'
      mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
    fi
"""
assert s.count(anchor) == 1, "kind's entrypoint changed: no single 'detected cgroupns' line"
open(p, "w").write(s.replace(anchor, add))
PY

# this machine's other deviations (see the header)
if [[ $cap_sys_resource == 0 ]]; then
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$root/etc/containerd/config.toml"
fi
sed -i 's|^KUBELET_EXTRA_ARGS=|KUBELET_EXTRA_ARGS=--fail-cgroupv1=false |' "$root/etc/default/kubelet"

rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
