#!/usr/bin/env bash
# The Helm chart deploy/helm/podwarp: lint, render (default and non-default
# values), validate every rendered object against strict schemas, prove the
# validation and values.schema.json reject mistakes, and check that
# deploy/podwarp.yaml is the chart's rendering. Exits non-zero on any failure.
# Offline after the first run: helm and kubeconform are built from the Go
# module proxy (scripts/helm-tools.sh), the schemas are made from the
# Kubernetes OpenAPI in the k8s.io/kubernetes module the e2e cluster pins
# (test/e2e/cluster/tools/go.mod) and from the vendored ServiceMonitor CRD.
#
#   bash scripts/helm-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/helm-tools.sh
start=$(date +%s)
helm=$(helm_bin)
kubeconform=$(kubeconform_bin)
chart=deploy/helm/podwarp
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "helm-check: FAIL: $*" >&2; exit 1; }
ok() { echo "helm-check: ok: $*"; }

# schemas: Kubernetes' OpenAPI of the pinned release, and the CRDs we render
k8s=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2}' test/e2e/cluster/tools/go.mod | head -1)
[[ $k8s =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "no k8s.io/kubernetes version in test/e2e/cluster/tools/go.mod"
moddir=$(GOMODCACHE="$PODWARP_CACHE/go/mod" GOFLAGS=-mod=mod "$GO" mod download -json "k8s.io/kubernetes@$k8s" |
  node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>{const j=JSON.parse(s);if(j.Error)throw new Error(j.Error);console.log(j.Dir)})')
swagger="$moddir/api/openapi-spec/swagger.json"
[[ -s $swagger ]] || fail "$swagger missing"
node_modules/.bin/tsx devtools/k8s-schemas.ts --out "$tmp/schemas" --swagger "$swagger" --crd test/helm/crds/monitoring.coreos.com_servicemonitors.yaml \
  --crd test/helm/crds/monitoring.coreos.com_prometheusrules.yaml
validate() { # files…: every object must match its kind's schema; a kind without one fails
  "$kubeconform" -summary -schema-location "$tmp/schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" "$@"
}

# lint (warnings fail too) with the default and the full values
"$helm" lint --strict "$chart" --namespace podwarp-system
"$helm" lint --strict "$chart" --namespace podwarp-system -f test/helm/values-full.yaml
ok "helm lint --strict, default and test/helm/values-full.yaml"

# render
"$helm" template podwarp "$chart" --namespace podwarp-system >"$tmp/default.yaml"
"$helm" template podwarp "$chart" --namespace podwarp-system --set namespace.create=true >"$tmp/manifest.yaml"
"$helm" template podwarp "$chart" --namespace monitoring-test -f test/helm/values-full.yaml >"$tmp/full.yaml"
kinds() { grep -E '^kind: ' "$1" | sed 's/^kind: //' | sort | tr '\n' ' '; }
[[ $(kinds "$tmp/default.yaml") == "ClusterRole ClusterRoleBinding DaemonSet ServiceAccount " ]] || fail "default kinds: $(kinds "$tmp/default.yaml")"
[[ $(kinds "$tmp/full.yaml") == "ClusterRole ClusterRoleBinding ConfigMap DaemonSet Namespace PrometheusRule Service ServiceAccount ServiceMonitor " ]] ||
  fail "full kinds: $(kinds "$tmp/full.yaml")"
for want in 'image: "registry.example.invalid/podwarp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"' \
  'serviceAccountName: podwarp-node-agent' 'name: podwarp-node-agent' 'example.invalid/role: node-agent' 'maxUnavailable: 10%' \
  'mountPath: /etc/podwarp-extra' 'name: podwarp-extra' 'imagePullPolicy: Always' '- "0.0.0.0:9500"' 'containerPort: 9500' \
  'memory: 512Mi' 'value: --max-old-space-size=256' '- --no-lb' 'release: kube-prometheus-stack' 'podwarp-dashboard.json: |-' \
  'namespace: monitoring-test' 'alert: PodwarpPolicyApiUnavailable' 'summary: podwarp'"'"'s agent on {{ $labels.node }} does not answer its metrics scrape'; do
  grep -qF -- "$want" "$tmp/full.yaml" || fail "full rendering lacks: $want"
done
! grep -q hostPort "$tmp/full.yaml" || fail "agent.metrics.hostPort=false still renders a hostPort"
[[ $(grep -c 'podwarp-node-agent' "$tmp/full.yaml") -eq 3 ]] || fail "serviceAccount.name: the ServiceAccount, the DaemonSet and the binding do not all name podwarp-node-agent"
"$helm" template podwarp "$chart" --set serviceAccount.create=false --set serviceAccount.name=existing-sa >"$tmp/no-sa.yaml"
! grep -q '^kind: ServiceAccount' "$tmp/no-sa.yaml" && grep -q 'serviceAccountName: existing-sa' "$tmp/no-sa.yaml" ||
  fail "serviceAccount.create=false: still renders a ServiceAccount, or the pod does not use existing-sa"
ok "helm template: default, manifest, full values render the expected objects"

# validate every rendering
validate "$tmp/default.yaml" "$tmp/manifest.yaml" "$tmp/full.yaml" deploy/podwarp.yaml
ok "kubeconform: every rendered object matches the Kubernetes $k8s / ServiceMonitor / PrometheusRule schemas"

# the validation rejects mistakes: a misspelled field (DaemonSet, ServiceMonitor), a wrong type, an unknown kind
must_fail() { # name file
  if validate "$2" >"$tmp/out" 2>&1; then cat "$tmp/out" >&2; fail "kubeconform accepted $1"; fi
  ok "kubeconform rejects $1: $(grep -m1 -oE '(additional properties|got|expected|could not find)[^"]*' "$tmp/out" || head -c 200 "$tmp/out")"
}
sed 's/imagePullPolicy:/imagePulPolicy:/' "$tmp/manifest.yaml" >"$tmp/typo-ds.yaml"
must_fail "a misspelled DaemonSet field (imagePulPolicy)" "$tmp/typo-ds.yaml"
sed 's/scrapeTimeout:/scrapeTimout:/' "$tmp/full.yaml" >"$tmp/typo-sm.yaml"
must_fail "a misspelled ServiceMonitor field (scrapeTimout)" "$tmp/typo-sm.yaml"
sed 's/^\(\s*\)expr: up{/\1exp: up{/' "$tmp/full.yaml" >"$tmp/typo-pr.yaml"
must_fail "a misspelled PrometheusRule field (exp)" "$tmp/typo-pr.yaml"
sed 's/maxUnavailable: 1/maxUnavailable: true/' "$tmp/manifest.yaml" >"$tmp/type.yaml"
must_fail "a wrong type (maxUnavailable: true)" "$tmp/type.yaml"
sed 's/^kind: DaemonSet/kind: DaemonSett/' "$tmp/manifest.yaml" >"$tmp/kind.yaml"
must_fail "an unknown kind (DaemonSett)" "$tmp/kind.yaml"

# values.schema.json rejects mistakes in values
for bad in image.tagg=x agent.metrics.port=http agent.logFormat=xml serviceMonitor.enabled=yes prometheusRule.enabled=yes resources.limits.memory=lots updateStrategy.rollingUpdate.maxSurge=1 image.digest=latest; do
  if "$helm" template podwarp "$chart" --set "$bad" >/dev/null 2>"$tmp/err"; then fail "values.schema.json accepted --set $bad"; fi
  grep -q 'schema' "$tmp/err" || { cat "$tmp/err" >&2; fail "--set $bad failed, but not on the values schema"; }
done
ok "values.schema.json rejects an unknown key, wrong types, unknown enums"

# deploy/podwarp.yaml is the chart's rendering
bash scripts/render-manifests.sh --check
echo "helm-check: all passed in $(($(date +%s) - start))s (helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION, Kubernetes schemas $k8s)"
