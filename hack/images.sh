#!/usr/bin/env bash
# make images: builds, with no image registry, the images the manifests and
# the test node (hack/cluster) run, and saves each as an archive that
# `ctr image import` loads:
#   localhost/nemesis/nemesis:dev   the project's Dockerfile, unchanged but for
#                                   its base build arguments
#   localhost/nemesis/nemesis-dev:dev  its dev target (the demo model)
#   localhost/nemesis/envoy:v1.40.0 the Envoy binary of .tools/bin/envoy
#   localhost/nemesis/pause:3.10    the pod sandbox (hack/images/pause)
#   localhost/nemesis/coredns:dev   the CoreDNS of .tools/bin/coredns
#   localhost/nemesis/postgres:15   PostgreSQL and Redis from Debian, for the
#   localhost/nemesis/redis:7       development install (manifests/dev)
# The Dockerfile's bases (golang, distroless static) are replaced by local
# stand-ins: a Debian rootfs made by debootstrap, with this machine's Go
# toolchain copied in, and a rootfs holding only the nonroot user and CA
# certificates. Every build runs with --pull=never; only the Debian mirror
# is reached (debootstrap, and apt-get for PostgreSQL and Redis).
#
# Machine-wide stand-ins and images stay in podman's storage between runs;
# the archives go to bin/images.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${NEMESIS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nemesis-tools}
out=$root/bin/images
here=$root/hack/images
mkdir -p "$out" "$cache/images"
export CONTAINERS_CONF=$here/containers.conf

# Image names are machine-wide in podman's storage: two checkouts building
# at once would save each other's images. One build at a time.
exec 8>/run/nemesis-images.lock
flock 8

# debootstrap's snapshot of bookworm; rebuilt only when the archive is absent.
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=localhost/nemesis-build/debian:$DEBIAN_SUITE
golang=localhost/nemesis-build/golang:$(go env GOVERSION | sed 's/^go//')
static=localhost/nemesis-build/static-debian12:nonroot

log() { printf 'images: %s\n' "$*" >&2; }
exists() { podman image exists "$1"; }

base_image() {
	exists "$base" && return
	local tar=$cache/images/debian-$DEBIAN_SUITE-minbase.tar
	if [ ! -s "$tar" ]; then
		log "debootstrap $DEBIAN_SUITE (about a minute)"
		local dir=$cache/images/rootfs.$$
		rm -rf "$dir"
		debootstrap --variant=minbase "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" >/dev/null
		rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
		tar -C "$dir" --numeric-owner -cf "$tar.$$" .
		mv "$tar.$$" "$tar"
		rm -rf "$dir"
	fi
	podman import --change 'CMD ["/bin/bash"]' "$tar" "$base" >/dev/null
}

golang_image() {
	exists "$golang" && return
	log "building $golang from $(go env GOROOT)"
	podman build --pull=never --network=none -q --build-arg BASE_IMAGE="$base" \
		-f "$here/golang.Containerfile" -t "$golang" "$(go env GOROOT)" >/dev/null
}

# The files of gcr.io/distroless/static-debian12:nonroot that a static Go
# binary uses: passwd and group with nonroot (65532), CA certificates, /tmp.
static_image() {
	exists "$static" && return
	log "building $static"
	local dir
	dir=$(mktemp -d)
	mkdir -p "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot"
	chmod 1777 "$dir/tmp"
	chown 65532:65532 "$dir/home/nonroot"
	printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
		'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$dir/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$dir/etc/group"
	tar -xOf "$cache/images/debian-$DEBIAN_SUITE-minbase.tar" ./etc/ssl/certs/ca-certificates.crt \
		>"$dir/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
	tar -C "$dir" --numeric-owner -c . | podman import --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' - "$static" >/dev/null
	rm -rf "$dir"
}

# build NAME CONTAINERFILE CONTEXT [podman build flags]: builds NAME unless it
# exists (images of machine-wide inputs: the base, Envoy, Debian packages).
build() {
	local name=$1 file=$2 context=$3
	shift 3
	exists "$name" && return
	log "building $name"
	podman build --pull=never -q --build-arg BASE_IMAGE="$base" "$@" -f "$file" -t "$name" "$context" >/dev/null
}

# save NAME: writes bin/images/<short name>.tar unless it holds NAME's
# current image already.
save() {
	local name=$1 file id
	file=$out/$(basename "${name%%:*}").tar
	id=$(podman image inspect --format '{{.Id}}' "$name")
	[ -s "$file" ] && [ "$(cat "$file.id" 2>/dev/null)" = "$id" ] && return
	log "saving $name to ${file#"$root"/}"
	rm -f "$file" "$file.id"
	podman save --quiet --format docker-archive -o "$file" "$name"
	echo "$id" >"$file.id"
}

base_image
golang_image
static_image

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# Envoy: the binary make tools installed, nothing else of the cache.
mkdir -p "$ctx/envoy"
cp "$(readlink -f "$root/.tools/bin/envoy")" "$ctx/envoy/envoy"
envoy_version=$("$ctx/envoy/envoy" --version | sed -n 's|.*/\([0-9][0-9.]*\)/.*|\1|p')
build "localhost/nemesis/envoy:v$envoy_version" "$here/envoy.Containerfile" "$ctx/envoy" --network=none

mkdir -p "$ctx/pause"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$ctx/pause/pause" ./hack/images/pause)
build localhost/nemesis/pause:3.10 "$here/pause.Containerfile" "$ctx/pause" --network=none

# CoreDNS follows .tools/bin/coredns: rebuilt when make tools rebuilt it.
mkdir -p "$ctx/coredns"
cp "$(readlink -f "$root/.tools/bin/coredns")" "$ctx/coredns/coredns"
coredns_base=$base
ldd "$ctx/coredns/coredns" >/dev/null 2>&1 || coredns_base=$static
if [ "$(podman image inspect --format '{{index .Labels "nemesis.coredns"}}' localhost/nemesis/coredns:dev 2>/dev/null)" != "$(sha256sum <"$ctx/coredns/coredns" | cut -c1-16)" ]; then
	podman rmi -f localhost/nemesis/coredns:dev >/dev/null 2>&1 || true
fi
build localhost/nemesis/coredns:dev "$here/coredns.Containerfile" "$ctx/coredns" --network=none \
	--build-arg BASE_IMAGE="$coredns_base" --label "nemesis.coredns=$(sha256sum <"$ctx/coredns/coredns" | cut -c1-16)"

# PostgreSQL and Redis install from the Debian mirror: the host's network.
build localhost/nemesis/postgres:15 "$here/postgres.Containerfile" "$here" --network=host
build localhost/nemesis/redis:7 "$here/redis.Containerfile" "$here" --network=host

# The project's image, from the real Dockerfile. The module cache is filled
# here (through the Go proxy if anything is missing) and mounted into the
# build with the build cache, so the build itself is offline and
# incremental.
log "building localhost/nemesis/nemesis:dev from Dockerfile"
(cd "$root" && go mod download)
dockerfile() { # TAG [podman build flags]
	local tag=$1
	shift
	podman build --pull=never --network=none -q \
		--build-arg GO_IMAGE="$golang" --build-arg BASE_IMAGE="$static" \
		-v "$(go env GOMODCACHE):/go/pkg/mod" -v "$(go env GOCACHE):/root/.cache/go-build" \
		-f "$root/Dockerfile" -t "$tag" "$@" "$root" >/dev/null
}
dockerfile localhost/nemesis/nemesis:dev
dockerfile localhost/nemesis/nemesis-dev:dev --target dev

for image in localhost/nemesis/nemesis:dev localhost/nemesis/nemesis-dev:dev "localhost/nemesis/envoy:v$envoy_version" localhost/nemesis/pause:3.10 \
	localhost/nemesis/coredns:dev localhost/nemesis/postgres:15 localhost/nemesis/redis:7; do
	save "$image"
done
log "ready in ${out#"$root"/}"
