#!/usr/bin/env bash
# deploy/podwarp.yaml is the Helm chart deploy/helm/podwarp rendered with its
# default values, release "podwarp" in namespace podwarp-system, and
# namespace.create=true (kubectl apply has no --create-namespace). Edit the
# chart, then run this; `--check` fails when the committed file differs.
#
#   bash scripts/render-manifests.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/helm-tools.sh
helm=$(helm_bin)

render() {
  cat <<'HEADER'
# podwarp on a Kubernetes cluster: one agent per node (DaemonSet) with the
# Kubernetes source. See deploy/README.md.
#
# Generated from the Helm chart deploy/helm/podwarp (default values,
# namespace.create=true) by scripts/render-manifests.sh: edit the chart's
# templates, then run that script. scripts/helm-check.sh fails when this file
# differs from the rendering.
#
#   docker build -t podwarp:dev .
#   kind load docker-image podwarp:dev --name <cluster>     # or push it to your registry
#   kubectl apply -f deploy/podwarp.yaml
#   kubectl label namespace <ns> podwarp.io/accelerate=true
#
# Deleting the DaemonSet leaves the datapath in place (traffic keeps flowing
# through it, but nobody updates it any more): remove it with `podwarp
# uninstall` on every node, as deploy/README.md shows.
HEADER
  "$helm" template podwarp deploy/helm/podwarp --namespace podwarp-system --set namespace.create=true
}

if [[ ${1:-} == --check ]]; then
  if ! diff -u deploy/podwarp.yaml <(render); then
    echo "render-manifests: deploy/podwarp.yaml is not the chart's rendering: run bash scripts/render-manifests.sh" >&2
    exit 1
  fi
  echo "render-manifests: deploy/podwarp.yaml equals the chart's rendering"
else
  render >deploy/podwarp.yaml.tmp && mv deploy/podwarp.yaml.tmp deploy/podwarp.yaml
  echo "render-manifests: wrote deploy/podwarp.yaml" >&2
fi
