#!/usr/bin/env bash
# The kernel matrix (issue 13): the BTF unit check and the integration test
# files on Debian's 5.10, 6.1 and 6.12 kernels in qemu VMs, on 6.12 booted
# with lockdown=confidentiality (6.12-lockdown: the lockdown mode Secure Boot
# distributions can enforce), and on the host kernel natively; prints one
# table (kernel × file → passed/failed/skipped).
#
#   scripts/kernel-matrix.sh [--kernels 5.10,6.1,6.12,6.12-lockdown,host]
#                            [--files btf,bpf,datapath,...]
#                            [--timeout SECONDS_PER_KERNEL] [--out DIR]
#
# K-lockdown: kernel K with lockdown=confidentiality (any of 5.10, 6.1, 6.12).
# Kernels are downloaded once into /var/cache/podwarp/kernels (private apt
# configuration; the machine's apt sources are not touched). KVM is used when
# a probe boot succeeds in time, else TCG (software emulation, slow); say
# PODWARP_VM_ACCEL=tcg|kvm to skip the probe. The VMs have no network device.
# Each script installs the Debian packages it needs when missing (qemu,
# busybox-static, kmod, cpio, ...: devtools/vm/need.sh). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
project=$(pwd)
kernels=5.10,6.1,6.12,6.12-lockdown,host
files=
timeout=
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --kernels) kernels=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kernel-matrix: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "kernel-matrix: run as root" >&2; exit 1; }
# one run per checkout: the VMs share this tree (build/, dist/, results)
mkdir -p build
exec 9>build/.kernel-matrix.lock
flock -n 9 || { echo "kernel-matrix: another run uses this checkout ($project); wait for it or use another worktree" >&2; exit 1; }

# test files: btf = the unit BTF check, bpf = the BPF unit tests (test/bpf/: BPF_PROG_TEST_RUN),
# NAME = test/integration/<name>.test.ts
if [ -z "$files" ]; then
  files=btf,bpf
  for f in test/integration/*.test.ts; do files="$files,$(basename "$f" .test.ts)"; done
fi
paths=()
for f in ${files//,/ }; do
  case "$f" in
    btf) paths+=(test/unit/btf.test.ts) ;;
    bpf) paths+=(test/bpf/*.test.ts) ;;
    */*) paths+=("$f") ;;
    *) [ -f "test/integration/$f.test.ts" ] || { echo "kernel-matrix: no test/integration/$f.test.ts" >&2; exit 2; }
       paths+=("test/integration/$f.test.ts") ;;
  esac
done

bash scripts/setup.sh
# build objects and test tools once on the host; the VMs share the tree
./bin/podwarp build >/dev/null
# the compiled JS: bin/podwarp then starts without transpiling (minutes under TCG)
npm run --silent build:js
npx tsx -e "import('./devtools/perf.ts').then((m) => m.ensurePwperf())"

[ -n "$out" ] || out=$(mktemp -d /tmp/podwarp-kmatrix.XXXXXX)
mkdir -p "$out"
echo "kernel-matrix: results in $out" >&2

# a column's kernel and its extra kernel arguments: K-lockdown boots K with lockdown=confidentiality
base() { echo "${1%-lockdown}"; }
bootargs() { case "$1" in *-lockdown) echo lockdown=confidentiality ;; esac; }
vmkernels=()
for k in ${kernels//,/ }; do
  [ "$k" = host ] && continue
  b=$(base "$k")
  [[ " ${vmkernels[*]} " == *" $b "* ]] || vmkernels+=("$b")
done
declare -A kdir=()
if [ ${#vmkernels[@]} -gt 0 ]; then
  while read -r k d; do kdir[$k]=$d; done < <(devtools/vm/kernels.sh "${vmkernels[@]}")
fi

# the accelerator: KVM only when a probe VM boots and runs `true` in time
accel=${PODWARP_VM_ACCEL:-}
if [ ${#vmkernels[@]} -gt 0 ] && [ -z "$accel" ]; then
  accel=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    if devtools/vm/run-in-vm.sh --kernel-dir "${kdir[${vmkernels[0]}]}" --out "$out/kvm-probe" --timeout 40 --accel kvm -- true >/dev/null 2>&1; then
      accel=kvm
    fi
  fi
  echo "kernel-matrix: accelerator $accel$([ "$accel" = tcg ] && echo ' (KVM missing or its probe VM did not finish within 40 s)')" >&2
fi
# under TCG everything runs ~10-50× slower: tests scale their waits by this
# (8 was too little: the BTF floor check took > 40 s on 6.1 under TCG)
if [ "$accel" = tcg ]; then slow=${PODWARP_TEST_SLOWDOWN:-16}; else slow=${PODWARP_TEST_SLOWDOWN:-1}; fi

for k in ${kernels//,/ }; do
  kout=$out/$k
  rm -rf "$kout"; mkdir -p "$kout"
  t0=$SECONDS
  if [ "$k" = host ]; then
    echo "kernel-matrix: host $(uname -r): ${#paths[@]} files" >&2
    echo native >"$kout/accel"; echo 0 >"$kout/boot_s"; uname -r >"$kout/kernel"
    mkdir -p "$kout/results"
    devtools/vm/probe-cgroup-query.sh >"$kout/results/probe-cgroup.txt" 2>&1 || true
    PODWARP_TEST_SLOWDOWN=${PODWARP_TEST_SLOWDOWN:-1} devtools/vm/run-tests.sh "$kout/results" "${paths[@]}" | sed -u "s/^/[host] /" >&2
    echo $((SECONDS - t0)) >"$kout/run_s"
  else
    d=${kdir[$(base "$k")]}
    append=$(bootargs "$k")
    basename "$d" >"$kout/kernel"
    # budget: 15 min per file under TCG, 3 under KVM, unless given
    per=$([ "$accel" = tcg ] && echo 900 || echo 180)
    tmo=${timeout:-$((120 + per * ${#paths[@]}))}
    echo "kernel-matrix: $k ($(basename "$d")${append:+ $append}, $accel, timeout ${tmo}s): ${#paths[@]} files" >&2
    # a VM that dies of an emulator fault (devtools/vm/console-fault.mjs: a
    # stale TCG translation of re-patched kernel text) runs once more; any
    # other death, failure or timeout stands
    for attempt in 1 2; do
      rc=0
      devtools/vm/run-in-vm.sh --kernel-dir "$d" --out "$kout" --timeout "$tmo" --accel "$accel" --append "$append" -- \
        "mkdir -p /mnt/pwvm/results; devtools/vm/probe-cgroup-query.sh >/mnt/pwvm/results/probe-cgroup.txt 2>&1; PODWARP_TEST_SLOWDOWN=$slow PODWARP_EXEC_TIMEOUT_MS=$((120000 * slow)) devtools/vm/run-tests.sh /mnt/pwvm/results ${paths[*]}" || rc=$?
      echo "$rc" >"$kout/vm_rc"
      echo $((SECONDS - t0)) >"$kout/wall_s"
      grep -a 'pwvm-tests:' "$kout/console.log" | sed "s/^/[$k] /" >&2 || true
      fault=$(node devtools/vm/console-fault.mjs "$kout/console.log") || fault=
      if [ "$rc" = 125 ] && [ "$accel" = tcg ] && [ -n "$fault" ] && [ "$attempt" = 1 ]; then
        echo "kernel-matrix: $k: the VM died of an $fault; running it once more" >&2
        prev=$out/$k.attempt1
        rm -rf "$prev"; mv "$kout" "$prev"; mkdir -p "$kout"
        basename "$d" >"$kout/kernel"
        echo "attempt 1 ended after $(cat "$prev/wall_s")s: $fault" >"$kout/retried"
        continue
      fi
      break
    done
  fi
done

node devtools/vm/matrix-table.mjs "$out" ${kernels//,/ } -- "${paths[@]}"
