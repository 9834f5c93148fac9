# podwarp image: the clang/bpftool toolchain and the agent in one.
#
#   docker build -t podwarp .
#   # compile BPF on a host without clang:
#   PODWARP_TOOLCHAIN_IMAGE=podwarp ./bin/podwarp build
#
# The agent needs the host's bpffs, cgroup2 and network namespace (see
# deploy/ once the Kubernetes source lands). Node 20 comes from the official
# image; the toolchain from Debian bookworm.
FROM node:20-bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm bpftool libbpf-dev linux-libc-dev iproute2 iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/podwarp
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY bpf ./bpf
COPY loader ./loader
COPY src ./src
COPY test/bench/pwperf.c ./test/bench/pwperf.c
RUN ./bin/podwarp build

ENTRYPOINT ["/opt/podwarp/bin/podwarp"]
CMD ["--help"]
