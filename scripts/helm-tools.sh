# Sourced by scripts/helm-check.sh and scripts/render-manifests.sh: pinned
# helm and kubeconform, built from the Go module proxy with the machine's Go
# and cached outside the repository by version (a second run builds nothing).
#   helm_bin / kubeconform_bin    print the binary's path, building it if missing
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
PODWARP_CACHE=${PODWARP_CACHE:-/var/cache/podwarp}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}

# go_tool NAME PACKAGE VERSION: $PODWARP_CACHE/NAME/VERSION/NAME
go_tool() {
  local name=$1 pkg=$2 version=$3 dir="$PODWARP_CACHE/$1/$3"
  if [[ ! -x $dir/$name ]]; then
    [[ -x $GO ]] || { echo "helm-tools: go not found (set GO=)" >&2; return 3; }
    echo "helm-tools: building $pkg@$version (once; cached in $dir)" >&2
    mkdir -p "$dir.tmp"
    GOMODCACHE="$PODWARP_CACHE/go/mod" GOCACHE="$PODWARP_CACHE/go/build" CGO_ENABLED=0 GOBIN="$dir.tmp" GOFLAGS=-buildvcs=false \
      nice -n 10 "$GO" install -trimpath -ldflags='-s -w' "$pkg@$version" >&2
    mkdir -p "$dir" && mv "$dir.tmp/$name" "$dir/$name" && rmdir "$dir.tmp"
  fi
  echo "$dir/$name"
}
helm_bin() { go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"; }
kubeconform_bin() { go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"; }
