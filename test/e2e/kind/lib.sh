# Shared by build.sh, up.sh and down.sh (sourced, not run).
#
# A private Docker engine: Debian bookworm's docker.io 20.10.24, unpacked from
# its .deb into the cache (never installed, so no service is started and no
# host config changes), run with its own data-root, exec-root, pidfile, socket
# and cgroup parent; no iptables/ip6tables rules, no ip masquerade, no docker0.
# Everything of one engine is named after its id: /run/pwkind-<id>,
# /var/lib/pwkind-<id>, cgroup /pwkind-<id> in every hierarchy.

KIND_VERSION=v0.33.0
K8S_VERSION=${K8S_VERSION:-v1.36.3}
DOCKER_DEB_VERSION=20.10.24
kind_cache=${PODWARP_KIND_CACHE:-/var/cache/podwarp/kind}
k8s_bin=${PODWARP_K8S_BIN:-/var/cache/podwarp/k8s/$K8S_VERSION/bin}
docker_root_pkg="$kind_cache/docker-$DOCKER_DEB_VERSION"
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
export GOMODCACHE=${GOMODCACHE:-/var/cache/podwarp/go/mod} GOCACHE=${GOCACHE:-/var/cache/podwarp/go/build}
# the Docker client matching the engine comes first; kind calls `docker`
export PATH="$kind_cache/bin:$k8s_bin:$docker_root_pkg/usr/sbin:$docker_root_pkg/usr/bin:$PATH"

pwk_log() { echo "${0##*/}: $*" >&2; }

# docker.io from Debian, unpacked (dockerd, docker, docker-proxy, tini as docker-init)
pwk_docker_unpack() {
  [[ -x $docker_root_pkg/usr/sbin/dockerd ]] && return 0
  local debs="$kind_cache/debs"
  mkdir -p "$debs" "$docker_root_pkg.tmp"
  (cd "$debs" && apt-get download docker.io tini >/dev/null 2>&1) || { pwk_log "apt-get download docker.io tini failed"; return 1; }
  for f in "$debs"/docker.io_*.deb "$debs"/tini_*.deb; do dpkg-deb -x "$f" "$docker_root_pkg.tmp"; done
  ln -sf tini-static "$docker_root_pkg.tmp/usr/bin/docker-init"
  mv "$docker_root_pkg.tmp" "$docker_root_pkg"
}

# Docker 20.10 gives --privileged containers (kind's nodes) every capability it
# knows, and runc fails where root's bounding set lacks one (CAP_SYS_RESOURCE
# here): "unable to apply caps: operation not permitted". The engine's runtime
# is runc behind this wrapper, which drops those from the bundle first.
pwk_runc_wrapper() {
  local w="$kind_cache/bin/pwkind-runc" here_dir runc
  here_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  runc=$(command -v runc)
  mkdir -p "$kind_cache/bin"
  cat >"$w.tmp" <<WRAPPER
#!/bin/sh
# runc for the pwkind Docker engine (test/e2e/kind/lib.sh)
bundle=""; process=""; prev=""; create=""
for a in "\$@"; do
  case "\$a" in create|run) create=1 ;; --bundle=*) bundle="\${a#--bundle=}" ;; --process=*) process="\${a#--process=}" ;; esac
  case "\$prev" in --bundle|-b) bundle="\$a" ;; --process|-p) process="\$a" ;; esac
  prev="\$a"
done
if [ -n "\$create" ] && [ -n "\$bundle" ] && [ -f "\$bundle/config.json" ]; then
  python3 "$here_dir/runc-caps.py" "\$bundle/config.json" || exit 1
fi
if [ -n "\$process" ] && [ -f "\$process" ]; then
  python3 "$here_dir/runc-caps.py" "\$process" || exit 1
fi
exec $runc "\$@"
WRAPPER
  chmod 0755 "$w.tmp" && mv "$w.tmp" "$w"
}

# pwk_dockerd_start ID: starts the engine, exports DOCKER_HOST; state in /run/pwkind-ID
pwk_dockerd_start() {
  local id=$1 run="/run/pwkind-$1" data="/var/lib/pwkind-$1"
  mkdir -p "$run" "$data"
  pwk_runc_wrapper
  export DOCKER_HOST="unix://$run/docker.sock"
  # the address pool stays clear of the sandbox (10.97/16, 10.200-249) and the
  # real-cluster e2e (10.150-152)
  setsid dockerd \
    --data-root "$data" --exec-root "$run/x" --pidfile "$run/dockerd.pid" -H "$DOCKER_HOST" \
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
    --cgroup-parent "/pwkind-$id" --exec-opt native.cgroupdriver=cgroupfs \
    --default-address-pool base=10.154.0.0/16,size=24 \
    --add-runtime "pwkind-runc=$kind_cache/bin/pwkind-runc" --default-runtime pwkind-runc \
    --storage-driver overlay2 --log-level warn >"$run/dockerd.log" 2>&1 </dev/null &
  echo $! >"$run/dockerd.launcher"
  local i
  for i in $(seq 1 60); do
    docker info --format '{{.ServerVersion}}' >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$run/dockerd.launcher")" 2>/dev/null || break
    sleep 1
  done
  pwk_log "dockerd did not come up:"; tail -20 "$run/dockerd.log" >&2
  return 1
}

# pwk_dockerd_stop ID: containers, networks, engine, leftover shims, mounts, cgroups, dirs
pwk_dockerd_stop() {
  local id=$1 run="/run/pwkind-$1" data="/var/lib/pwkind-$1"
  export DOCKER_HOST="unix://$run/docker.sock"
  if [[ -S $run/docker.sock ]] && docker info >/dev/null 2>&1; then
    local c n
    c=$(docker ps -aq); [[ -z $c ]] || docker rm -f -v $c >/dev/null 2>&1 || true
    for n in $(docker network ls -q --filter type=custom); do
      echo "br-${n:0:12}" >>"$run/bridges"
      docker network rm "$n" >/dev/null 2>&1 || true
    done
    docker volume prune -f >/dev/null 2>&1 || true
  fi
  local pid=""
  [[ -s $run/dockerd.pid ]] && pid=$(cat "$run/dockerd.pid")
  [[ -z $pid && -s $run/dockerd.launcher ]] && pid=$(cat "$run/dockerd.launcher")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # processes still using this engine's paths (containerd, shims): by pid
  local p
  for p in $(grep -l -a -e "pwkind-$id" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    [[ $p == "$$" ]] || kill -9 "$p" 2>/dev/null || true
  done
  sleep 0.5
  # mounts below its directories, deepest first
  local m
  for m in $(awk -v a="$run" -v b="$data" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  # its bridges, should the engine have left one
  local b
  for b in $(cat "$run/bridges" 2>/dev/null); do ip link show "$b" >/dev/null 2>&1 && ip link del "$b" 2>/dev/null || true; done
  # its cgroups in every hierarchy, deepest first
  local h
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [[ -d $h/pwkind-$id ]] && find "$h/pwkind-$id" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$run" "$data"
}
