# Sourced by scripts/kernel-matrix.sh and the devtools/vm/ scripts: installs
# the Debian packages a script needs when they are missing, from the
# machine's own apt sources (never changed), so each script also works alone
# on a fresh machine.
#
#   need CHECK PACKAGE [CHECK PACKAGE ...]   CHECK: a shell function that
#                                            succeeds when PACKAGE is not
#                                            needed, an absolute path that
#                                            must exist, or a command on PATH
#   need_pkgs PACKAGE ...                    install these
#
# All missing packages of one call go to one apt-get install. apt-get update
# runs once per run: the scripts a run starts after it inherit
# PODWARP_APT_UPDATED. Messages go to stderr (stdout stays the script's).

need_missing() {
  while [ $# -ge 2 ]; do
    if declare -F "$1" >/dev/null; then
      "$1" || echo "$2"
    else
      case "$1" in
        /*) [ -e "$1" ] || echo "$2" ;;
        *) command -v "$1" >/dev/null 2>&1 || echo "$2" ;;
      esac
    fi
    shift 2
  done
}

need() {
  [ $(($# % 2)) = 0 ] || { echo "need: CHECK PACKAGE pairs, got: $*" >&2; return 2; }
  local pkgs still
  pkgs=$(need_missing "$@" | sort -u | tr '\n' ' ')
  [ -n "$pkgs" ] || return 0
  # shellcheck disable=SC2086 # package names: one word each
  need_pkgs $pkgs || return 1
  still=$(need_missing "$@" | sort -u | tr '\n' ' ')
  [ -z "$still" ] || { echo "${0##*/}: still missing after apt-get install: $still" >&2; return 1; }
}

need_pkgs() {
  [ $# -gt 0 ] || return 0
  local me=${0##*/}
  [ "$(id -u)" = 0 ] || { echo "$me: needs the Debian packages $*: run as root" >&2; return 1; }
  command -v apt-get >/dev/null || { echo "$me: needs the Debian packages $* (no apt-get on this machine)" >&2; return 1; }
  echo "$me: installing $*" >&2
  # another apt or dpkg on the machine: install waits for the dpkg lock; update
  # (the lists lock, which that option does not cover) tries three times
  local try
  for try in 1 2 3; do
    [ -z "${PODWARP_APT_UPDATED:-}" ] || break
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 >&2; then
      export PODWARP_APT_UPDATED=1
    elif [ $try = 3 ]; then
      return 1
    else
      echo "$me: apt-get update failed (another apt running?); again in 20 s" >&2
      sleep 20
    fi
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "$@" >/dev/null
}
