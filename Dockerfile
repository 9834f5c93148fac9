# podwarp image: the clang/bpftool toolchain and the agent in one.
#
#   docker build -t podwarp:dev .
#   # compile BPF on a host without clang:
#   PODWARP_TOOLCHAIN_IMAGE=podwarp:dev ./bin/podwarp build
#   # run it as the node agent (DaemonSet, RBAC): deploy/podwarp.yaml, deploy/README.md
#
# Node 20 comes from the official image; the toolchain from Debian bookworm.
# NODE_IMAGE swaps the base for a local one with the same layout (Debian
# bookworm + Node 20), e.g. the registry-less e2e: test/e2e/cluster/images.sh.
# What the agent runs at run time: bpftool, tc and ip (iproute2), mount (bpffs
# if the host has none), nsenter (util-linux: pod network namespaces by PID),
# iptables-save and nft (kube-proxy's sessionAffinity memory, handed over when
# a pod's acceleration switches: docs/services.md),
# clang only if the objects built here are out of date. The image holds the
# product only (abi/, host/, loader/, src/, bpf/): the demo, sandbox and traffic tools
# (devtools/) run from a checkout.
# stage 1: the agent and CLI compiled to plain JS and bundled (dist/bundle/,
# scripts/bundle.mjs); bin/podwarp runs it instead of TypeScript through tsx
# (measured: 141 vs 227 MiB for the module graph, less again bundled)
ARG NODE_IMAGE=node:20-bookworm-slim
FROM ${NODE_IMAGE} AS js
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
# npm can exit 0 after a failed install ("Exit handler never called!"): check the compiler is there
RUN npm ci --no-audit --no-fund && test -x node_modules/.bin/tsc
COPY abi ./abi
COPY host ./host
COPY loader ./loader
COPY src ./src
COPY scripts/bundle.mjs scripts/build-info.mjs ./scripts/
# the commit `podwarp version` reports (no .git here): --build-arg PODWARP_COMMIT=$(git rev-parse HEAD)
ARG PODWARP_COMMIT=
RUN npm run build:js

FROM ${NODE_IMAGE}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm bpftool libbpf-dev linux-libc-dev libc6-dev iproute2 iptables nftables \
      util-linux mount ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/podwarp
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
# what `podwarp build` reads: bpf/*.c, bpf/*.h, bpf/iter/*.c and the layout
# schema in abi/ (it generates build/include/pw_maps.h); bin/ and loader/ run it
COPY bin/podwarp ./bin/podwarp
COPY bpf ./bpf
COPY abi ./abi
COPY host ./host
COPY loader ./loader
COPY src ./src
# after src/, loader/ and host/: bin/podwarp uses dist/ while .stamp is newer than every source
COPY --from=js /src/dist ./dist
RUN touch dist/.stamp
# objects built now are up to date when the agent starts (no clang at start-up);
# the symlink puts podwarp on PATH for `kubectl exec … -- podwarp dump …`
RUN ./bin/podwarp build \
 && ln -s /opt/podwarp/bin/podwarp /usr/local/bin/podwarp \
 && podwarp --help >/dev/null

ENTRYPOINT ["/opt/podwarp/bin/podwarp"]
CMD ["--help"]
