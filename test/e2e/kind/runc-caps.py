"""Called by the runc wrapper of lib.sh on `runc create`/`run`/`exec`: gives a
privileged container the capabilities Docker 20.10 does not know (below), and removes
from the bundle's config.json (or exec's process.json) every capability that is not in this process's
bounding set. Docker 20.10 gives a --privileged container every capability it
knows; where root lacks one (CAP_SYS_RESOURCE on this machine) runc fails with
"unable to apply caps: operation not permitted". Usage: runc-caps.py CONFIG.json
"""
import json
import sys

# capability numbers, linux/capability.h
NAMES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
    "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT "
    "SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE "
    "AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ "
    "PERFMON BPF CHECKPOINT_RESTORE"
).split()


def main(path: str) -> None:
    with open("/proc/self/status") as f:
        bnd = int(next(line.split()[1] for line in f if line.startswith("CapBnd:")), 16)
    allowed = {"CAP_" + n for i, n in enumerate(NAMES) if bnd >> i & 1}
    with open(path) as f:
        cfg = json.load(f)
    # a bundle's config.json (create, run) or a process.json (exec --process)
    caps = (cfg["process"] if "process" in cfg else cfg).get("capabilities") or {}
    # Docker 20.10 knows capabilities up to AUDIT_READ (37): a --privileged
    # container lacks CAP_PERFMON and CAP_BPF, which bpftool (podwarp's agent in
    # a kind node) asks for. A set holding every capability Docker knows is a
    # privileged one: it gets every capability root has.
    docker_known = {"CAP_" + n for n in NAMES[:38]} & allowed
    changed = False
    for kind, names in caps.items():
        kept = [c for c in names if c in allowed]
        if kind != "ambient" and docker_known <= set(kept):
            kept = sorted(allowed)
        if kept != names:
            caps[kind] = kept
            changed = True
    if changed:
        with open(path, "w") as f:
            json.dump(cfg, f)


if __name__ == "__main__":
    main(sys.argv[1])
