#!/bin/sh
# Stage 2 of the kernel-matrix VM, PID 1 after switch_root (the host's
# userland, read-only under a tmpfs overlay). Mounts what a node has (and
# securityfs: prints and writes /mnt/pwvm/lockdown, the lockdown mode), raises
# RLIMIT_MEMLOCK (kernels before 5.11 charge BPF maps to it), runs
# /mnt/pwvm/cmd in the project directory, writes its exit status to
# /mnt/pwvm/status and powers the VM off (qemu runs with -no-reboot).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
# a project below /tmp or /run (a CI clone) would be hidden by the tmpfs mounted there:
# hold it at /mnt/pwproject meanwhile and move it back (a 9p tag mounts only once)
project=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^pw.project=//p' | tail -n1)
case "$project" in /tmp/* | /run/*) mkdir -p /mnt/pwproject && mount --bind "$project" /mnt/pwproject ;; esac
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
if mountpoint -q /mnt/pwproject; then mkdir -p "$project" && mount --move /mnt/pwproject "$project"; fi
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
echo "pwvm: stage2 at uptime $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)"
# the lockdown mode in force (lockdown= on the command line; none without the LSM)
lockdown=$(cat /sys/kernel/security/lockdown 2>/dev/null) || lockdown="no lockdown LSM ($(cat /sys/kernel/security/lsm 2>/dev/null || echo 'no securityfs'))"
echo "pwvm: /sys/kernel/security/lockdown: $lockdown"
echo "$lockdown" >/mnt/pwvm/lockdown
cut -d' ' -f1 /proc/uptime >/mnt/pwvm/boot_s
ulimit -l unlimited
ulimit -n 65536
hostname pwvm
ip link set lo up
# the cgroup v2 controllers a node has (tests make child cgroups)
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; done
modprobe -a veth sch_ingress cls_bpf bridge dummy 2>/dev/null
# a node's uplink and default route, as on the host: without any route a
# ClusterIP that kube-proxy's rules drop or reject gets 'network unreachable'
# from routing before the FORWARD rules see it (services-semantics). A dummy
# device: what is routed to it goes nowhere, the VM stays without a network.
ip link add uplink0 type dummy && ip link set uplink0 up && ip route add default dev uplink0 ||
  echo "pwvm: no dummy uplink: tests that need a default route will fail"
project=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^pw.project=//p' | tail -n1)
cd "$project" || echo "pwvm: no project dir $project"
t0=$(cut -d' ' -f1 /proc/uptime)
sh /mnt/pwvm/cmd
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
echo "$t0 $t1" | awk '{printf "%.1f\n", $2 - $1}' >/mnt/pwvm/run_s
echo "$rc" >/mnt/pwvm/status
sync
echo "pwvm: command exited $rc"
echo b >/proc/sysrq-trigger
sleep 10
