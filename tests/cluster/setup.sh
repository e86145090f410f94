#!/usr/bin/env bash
# Builds the binaries of the local Kubernetes test bed from the Go module proxy:
#   etcd 3.5 (wrapper module around etcdmain.Main),
#   kube-apiserver, kube-scheduler, kube-controller-manager (one wrapper module requiring
#   k8s.io/kubernetes with a replace list generated from its go.mod, version ldflags),
#   kubelet and kube-proxy for the real node (their own wrapper module, same replace list
#   and ldflags),
#   the real node's nvidia.com/gpu device plugin test double (own module, k8s.io/kubelet),
#   kwok (go install) plus its Stage YAMLs,
#   the Kubeflow training operator v1 (go install; only for the tests that run real jobs),
#   helm v3 (go install; renders the Zero to JupyterHub chart with helm-values/).
#   CoreDNS (go install; the real node's cluster DNS).
# Results are cached outside the repository in $GPUHUB_CACHE/k8s/<name>-<version>/ and
# keyed by version (and by the hash of the wrapper sources); a cached run prints nothing.
# Prints the cache directory to stdout with --print-dir.
set -euo pipefail

K8S_VERSION="${GPUHUB_K8S_VERSION:-v1.33.13}"
ETCD_VERSION="${GPUHUB_ETCD_VERSION:-v3.5.21}"
KWOK_VERSION="${GPUHUB_KWOK_VERSION:-v0.7.0}"
# The proxy's version list shows only v1.8.1, but v1.9.0-v1.9.3 download by exact version.
TRAINING_OPERATOR_VERSION="${GPUHUB_TRAINING_OPERATOR_VERSION:-v1.9.3}"
HELM_VERSION="${GPUHUB_HELM_VERSION:-v3.22.0}"
# Cluster DNS for the real node (the module has no replace directives: go install works).
COREDNS_VERSION="${GPUHUB_COREDNS_VERSION:-v1.15.0}"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${GPUHUB_CACHE:-$HOME/.cache/gpuhub}/k8s"

if [ "${1:-}" = "--print-dir" ]; then echo "$CACHE"; exit 0; fi

# GOPROXY and GOSUMDB stay as the machine sets them.
export CGO_ENABLED=0 GOTOOLCHAIN=local
export GOFLAGS="-p=2 -buildvcs=false"

log() { printf '[tests/cluster/setup] %s\n' "$*" >&2; }

# stamp NAME VERSION: the key a finished build in DIR must carry (version + wrapper sources).
stamp() {
  { echo "$2"; find "$HERE/go/$1" -name '*.go' -type f 2>/dev/null | sort | xargs -r cat || true; } | sha256sum | cut -c1-16
}

is_built() { [ -f "$1/.complete" ] && [ "$(cat "$1/.complete")" = "$2" ]; }

build_etcd() {
  local dir="$CACHE/etcd-$ETCD_VERSION" key
  key="$(stamp etcd "$ETCD_VERSION")"
  is_built "$dir" "$key" && return 0
  log "building etcd $ETCD_VERSION into $dir"
  rm -rf "$dir"; mkdir -p "$dir/src" "$dir/bin"
  cp "$HERE/go/etcd/main.go" "$dir/src/"
  (
    cd "$dir/src"
    go mod init gpuhub.local/testbed/etcd >/dev/null 2>&1
    go mod edit -go=1.24.0 -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy >/dev/null
    go build -trimpath -o "$dir/bin/etcd" .
  )
  echo "$key" > "$dir/.complete"
}

# k8s_replaces GOMOD VERSION: "-replace=k8s.io/x=k8s.io/x@v0.N.P" for every staging module.
k8s_replaces() {
  local staging="v0.${2#v1.}"
  sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$1" |
    while read -r m; do printf -- '-replace=%s=%s@%s\n' "$m" "$m" "$staging"; done
}

k8s_ldflags() {
  local v="$1" minor date flags="-s -w" pkg
  minor="${v#v1.}"; minor="${minor%%.*}"
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000"
    flags+=" -X $pkg.buildDate=$date"
  done
  echo "$flags"
}

# build_k8s NAME WHAT: the wrapper module under go/NAME (cmd/<binary>/main.go files), which
# requires k8s.io/kubernetes with the staging replace list, built into $CACHE/NAME-<version>/bin.
build_k8s() {
  local name="$1" dir="$CACHE/$1-$K8S_VERSION" key gomod
  key="$(stamp "$name" "$K8S_VERSION")"
  is_built "$dir" "$key" && return 0
  log "building $2 $K8S_VERSION into $dir (slow, first run only)"
  rm -rf "$dir"; mkdir -p "$dir/src" "$dir/bin"
  cp -r "$HERE/go/$name/cmd" "$dir/src/"
  (
    cd "$dir/src"
    go mod init "gpuhub.local/testbed/$name" >/dev/null 2>&1
    gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
    local goline
    goline="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"
    go mod edit -go="$goline" -require="k8s.io/kubernetes@$K8S_VERSION"
    # shellcheck disable=SC2046
    go mod edit $(k8s_replaces "$gomod" "$K8S_VERSION")
    if grep -q '^godebug' "$gomod"; then
      sed -n '/^godebug/p' "$gomod" >> go.mod
    fi
    go mod tidy >/dev/null
    go build -trimpath -ldflags "$(k8s_ldflags "$K8S_VERSION")" -o "$dir/bin/" ./cmd/...
  )
  echo "$key" > "$dir/.complete"
}

build_kubernetes() { build_k8s kubernetes "kube-apiserver, kube-scheduler, kube-controller-manager"; }

# The real node's kubelet and kube-proxy: their own wrapper module and folder, so that
# the control plane's binaries are not rebuilt when it changes.
build_kubelet() { build_k8s kubelet "kubelet, kube-proxy"; }

# The real node's nvidia.com/gpu device plugin (go/gpu-device-plugin): its own module
# requiring k8s.io/kubelet at the staging version of K8S_VERSION, its own folder.
build_gpu_device_plugin() {
  local version="v0.${K8S_VERSION#v1.}" dir key
  dir="$CACHE/gpu-device-plugin-$version"
  key="$(stamp gpu-device-plugin "$version")"
  is_built "$dir" "$key" && return 0
  log "building the GPU device plugin (k8s.io/kubelet $version) into $dir"
  rm -rf "$dir"; mkdir -p "$dir/src" "$dir/bin"
  cp "$HERE/go/gpu-device-plugin/main.go" "$dir/src/"
  (
    cd "$dir/src"
    go mod init gpuhub.local/testbed/gpu-device-plugin >/dev/null 2>&1
    go mod edit -go=1.24.0 -require="k8s.io/kubelet@$version"
    go mod tidy >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$dir/bin/gpu-device-plugin" .
  )
  echo "$key" > "$dir/.complete"
}

# The real node also needs containerd, runc and the CNI plugins: Debian's packages, installed
# as root when missing (without root the real-node tests report what is missing).
node_tools() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "real node: not root, not installing ${missing[*]}"
    return 0
  fi
  log "installing ${missing[*]} (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build_kwok() {
  local dir="$CACHE/kwok-$KWOK_VERSION" key src
  key="$(stamp kwok "$KWOK_VERSION")"
  is_built "$dir" "$key" && return 0
  log "building kwok $KWOK_VERSION into $dir"
  rm -rf "$dir"; mkdir -p "$dir/bin" "$dir/stages"
  GOBIN="$dir/bin" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  src="$(cd /tmp && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  local f
  for f in "$src"/kustomize/stage/node/fast/*.yaml "$src"/kustomize/stage/node/heartbeat-with-lease/*.yaml \
           "$src"/kustomize/stage/pod/fast/*.yaml; do
    case "$(basename "$f")" in kustomization.yaml) ;; *) cp "$f" "$dir/stages/" ;; esac
  done
  chmod u+w "$dir"/stages/*.yaml
  echo "$key" > "$dir/.complete"
}

# The module has no replace directives, so a plain go install works.
build_training_operator() {
  local dir="$CACHE/training-operator-$TRAINING_OPERATOR_VERSION" key
  key="$(stamp training-operator "$TRAINING_OPERATOR_VERSION")"
  is_built "$dir" "$key" && return 0
  log "building training-operator $TRAINING_OPERATOR_VERSION into $dir"
  rm -rf "$dir"; mkdir -p "$dir/bin"
  (cd /tmp && GOBIN="$dir/bin" go install -trimpath -ldflags "-s -w" \
    "github.com/kubeflow/training-operator/cmd/training-operator.v1@$TRAINING_OPERATOR_VERSION")
  mv "$dir/bin/training-operator.v1" "$dir/bin/training-operator"
  echo "$key" > "$dir/.complete"
}

# helm v3: no replace directives, so go install; the ldflags are those of helm's Makefile
# (version, and the default Kubernetes version from the client-go it requires, v0.37 -> 1.37).
build_helm() {
  local dir="$CACHE/helm-$HELM_VERSION" key pkg flags="-s -w"
  key="$(stamp helm "$HELM_VERSION")"
  is_built "$dir" "$key" && return 0
  log "building helm $HELM_VERSION into $dir"
  rm -rf "$dir"; mkdir -p "$dir/bin"
  flags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=37"
  done
  (cd /tmp && GOBIN="$dir/bin" go install -trimpath -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  echo "$key" > "$dir/.complete"
}

build_coredns() {
  local dir="$CACHE/coredns-$COREDNS_VERSION" key
  key="$(stamp coredns "$COREDNS_VERSION")"
  is_built "$dir" "$key" && return 0
  log "building coredns $COREDNS_VERSION into $dir"
  rm -rf "$dir"; mkdir -p "$dir/bin"
  (cd /tmp && GOBIN="$dir/bin" go install -trimpath -ldflags "-s -w" \
    "github.com/coredns/coredns@$COREDNS_VERSION")
  echo "$key" > "$dir/.complete"
}

mkdir -p "$CACHE"
build_etcd
build_kwok
build_kubernetes
build_kubelet
build_gpu_device_plugin
build_training_operator
build_helm
build_coredns
node_tools
