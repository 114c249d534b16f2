#!/bin/bash
# Build a real Kubernetes v1.20.2 control plane + kubelet from Debian bookworm's "kubernetes" source
# package (derived from the verified recipe in the project's shared notes). Needs apt (Debian archive)
# and PyPI only. Output: $R/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl}
# Cached: skipped when $R/bin/.built holds the source package version this machine's apt offers
# (the Go build cache $R/gocache stays, so a rebuild after a version bump takes ~3.5 min, not ~10).
# Usage: bash .ci/kubernetes/build.sh [--force]     Env: R (default /var/cache/swarmrun-k8s)
set -euo pipefail
R=${R:-/var/cache/swarmrun-k8s}; mkdir -p $R/bin $R/apt/lists/partial $R/apt/cache/archives/partial $R/src
log() { printf '[k8s-build %s] %s\n' "$(date +%T)" "$*" >&2; }
exec 8>"$R/build.lock"; flock -w 1800 8 || { log "ERROR: another build holds $R/build.lock"; exit 1; }
APTO="-o Dir::Etc::SourceList=$R/apt/sources.list -o Dir::Etc::SourceParts=$R/apt/sources.list.d -o Dir::State::Lists=$R/apt/lists -o Dir::Cache=$R/apt/cache"
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
all_bins() { for b in $BINS; do [ -x $R/bin/$b ] || return 1; done; }
src_version() { apt-cache $APTO showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -n1; }
# The deb-src twin of this machine's own apt sources (no mirror address written down anywhere).
mkdir -p $R/apt/sources.list.d && rm -f $R/apt/sources.list.d/*
for f in /etc/apt/sources.list.d/*.sources; do [ -e "$f" ] && sed 's/^Types: deb$/Types: deb-src/' "$f" > "$R/apt/sources.list.d/$(basename "$f")"; done
if [ -f /etc/apt/sources.list ]; then sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > $R/apt/sources.list; else : > $R/apt/sources.list; fi
# Cache check first: the private deb-src index from a previous build answers without the network.
V=$(src_version || true)
if [ "${1:-}" != --force ] && [ -n "$V" ] && [ "$(cat $R/bin/.built 2>/dev/null)" = "$V" ] && all_bins; then
  log "cached: kubernetes source $V already built in $R/bin"; exit 0
fi
T0=$SECONDS
ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -qq   # a fresh machine has no lists yet
command -v go >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends golang-go   # Go 1.19 (bookworm)
command -v socat >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends socat  # dockershim port-forward runs socat on the node
command -v gcc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev  # the pause binary (up.sh)
apt-get $APTO update -qq                                 # private deb-src index, system apt state untouched
V=$(src_version); log "building kubernetes source package $V"
[ "${1:-}" != --force ] && [ "$(cat $R/bin/.built 2>/dev/null)" = "$V" ] && all_bins && { log "cached: $V"; exit 0; }
cd $R/src
apt-get $APTO source --download-only kubernetes 2>&1 | grep -v unsandboxed || true   # 34 MB orig tarball incl. vendor/
(cd $R/apt/cache/archives && apt-get download golang-github-modern-go-reflect2-dev kubernetes-client 2>&1 | grep -v unsandboxed || true)
ORIG=$(ls -1 kubernetes_*.orig.tar.gz | sort -V | tail -n1)
rm -rf kubernetes-1.20.2 && tar -xzf "$ORIG"
K=$R/src/kubernetes-1.20.2
# 1) vendored reflect2 v1.0.1 is broken with Go >= 1.18 -> swap in Debian's 1.0.2
rm -rf $R/src/reflect2 && dpkg-deb -x $R/apt/cache/archives/golang-github-modern-go-reflect2-dev_*.deb $R/src/reflect2
rm -rf $K/vendor/github.com/modern-go/reflect2 && cp -r $R/src/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2 $K/vendor/github.com/modern-go/ && rm -f $K/vendor/github.com/modern-go/reflect2/go.mod
# 2) no CAP_SYS_RESOURCE here: a negative oom_score_adj makes runc fail; never move other dockerd
#    processes into the kubelet's cgroups; never change the machine's sysctls (warn only)
sed -i 's|guaranteedOOMScoreAdj int = -997|guaranteedOOMScoreAdj int = 0|' $K/pkg/kubelet/qos/policy.go
sed -i 's|defaultSandboxOOMAdj int = -998|defaultSandboxOOMAdj int = 0|' $K/pkg/kubelet/dockershim/docker_sandbox.go
sed -i 's|^func (m \*containerManager) doWork() {$|func (m *containerManager) doWork() {\n\tif true {\n\t\treturn\n\t}|' $K/pkg/kubelet/dockershim/cm/container_manager_linux.go
sed -i 's|^\tb := KernelTunableModify$|\tb := KernelTunableWarn|' $K/pkg/kubelet/cm/container_manager_linux.go
grep -q 'b := KernelTunableWarn' $K/pkg/kubelet/cm/container_manager_linux.go && grep -q 'guaranteedOOMScoreAdj int = 0' $K/pkg/kubelet/qos/policy.go \
  && grep -q 'defaultSandboxOOMAdj int = 0' $K/pkg/kubelet/dockershim/docker_sandbox.go && grep -A2 'func (m \*containerManager) doWork' $K/pkg/kubelet/dockershim/cm/container_manager_linux.go | grep -q 'if true'
export GOPATH=$R/gopath GOCACHE=${GOCACHE:-$R/gocache} CGO_ENABLED=0 GO111MODULE=off GOFLAGS=
mkdir -p $GOPATH/src/k8s.io && ln -sfn $K $GOPATH/src/k8s.io/kubernetes && cd $GOPATH/src/k8s.io/kubernetes
# 3) generated OpenAPI definitions are not in the tarball -> generate them (as the upstream Makefile does)
go build -o $R/bin/openapi-gen ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
DIRS=$(grep -Rl --include='*.go' '+k8s:openapi-gen=' pkg cmd plugin vendor/k8s.io/ | grep -v '_test.go$' | grep -vE '^vendor/k8s.io/(code-generator|sample-apiserver)/' | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
$R/bin/openapi-gen -i "$DIRS" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r $R/openapi-violations.report
VP=k8s.io/kubernetes/vendor/k8s.io; LD="-s -w"
for p in $VP/component-base/version $VP/client-go/pkg/version; do LD="$LD -X $p.gitVersion=v1.20.2 -X $p.gitMajor=1 -X $p.gitMinor=20 -X $p.gitTreeState=clean"; done
rm -f $R/bin/.built
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  s=$SECONDS; go build -tags selinux,notest -ldflags "$LD" -o $R/bin/$c ./cmd/$c; log "built $c in $((SECONDS - s)) s"
done
dpkg-deb --fsys-tarfile $R/apt/cache/archives/kubernetes-client_*.deb | tar -xO ./usr/bin/kubectl > $R/bin/kubectl && chmod +x $R/bin/kubectl   # Debian's kubectl 1.20.2
rm -rf $R/gopath/src/k8s.io/kubernetes/_output
echo "$V" > $R/bin/.built
log "BUILD-OK ($V) in $((SECONDS - T0)) s"
