#!/usr/bin/env bash
# A single-node Kubernetes cluster from real components, for the cluster
# tests (tests/cluster) and `make cluster`:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#   kube-proxy and CoreDNS built by make tools at pinned versions,
#   containerd, runc and the CNI plugins from Debian,
#   the images of make images (bin/images) loaded into containerd.
#
# usage: cluster.sh up       start, print the kubeconfig, stay until Ctrl-C,
#                            then take everything down
#        cluster.sh start    start and return, leaving the node running
#        cluster.sh down     stop a node started by either and undo all it
#                            changed on the machine
#        cluster.sh logs     print the tails of every component's log
#
# One node per machine: the node's state lives in fixed places
# (/var/lib/nemesis-cluster, the kubelet's and containerd's fixed paths,
# iptables chains, sysctls), so `start` waits for the lock
# /run/nemesis-cluster.lock, held while the node runs. `down` restores the
# sysctls the kubelet and kube-proxy change, removes their iptables chains
# (and only theirs), unmounts what the pods mounted and removes the fixed
# paths that did not exist before.
#
# Addresses: pods in $POD_CIDR on the bridge nemesis0, Services in
# $SERVICE_CIDR; neither clashes with podman's 10.88.0.0/16 or the
# 10.213.x.x namespaces of the other tests. The API server listens on the
# machine's primary address (pods reach it there through the kubernetes
# Service) on $API_PORT.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/hack/cluster
tools=$root/.tools/bin
STATE=/var/lib/nemesis-cluster
LOCK=/run/nemesis-cluster.lock
LOGS=${NEMESIS_CLUSTER_LOGS:-$root/.run/cluster}
NODE=nemesis-node
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/24
KUBERNETES_IP=10.96.0.1
DNS_IP=10.96.0.10
API_PORT=16443
ETCD_PORT=23790
BRIDGE=nemesis0
# What the kubelet (setupKernelTunables), kube-proxy and this script set.
SYSCTLS=(net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet
	net.bridge.bridge-nf-call-iptables)
# Fixed paths the kubelet, containerd and the CNI plugins create.
FIXED_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/cni /opt/cni)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

kubectl() { "$tools/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }
ctr() { command ctr --address "$STATE/containerd.sock" --namespace k8s.io "$@"; }

node_ip() { ip -4 route get 1.1.1.1 | sed -n 's/.* src \([0-9.]*\).*/\1/p'; }

# run NAME ARGS...: starts a component in the background, its output in
# $LOGS/NAME.log and its pid in $STATE/pids/NAME. The lock's descriptor is
# closed in it: only the holder of `start` keeps the lock.
run() {
	local name=$1
	shift
	"$@" </dev/null >"$LOGS/$name.log" 2>&1 9>&- &
	echo $! >"$STATE/pids/$name"
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
	local what=$1 deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || die "$what not ready after $(($2 + 0))s; see $LOGS"
		sleep 0.5
	done
}

# pki: a CA and one certificate per client of the API server.
cert() { # NAME SUBJECT [SANS]
	local name=$1 subject=$2 sans=${3:-}
	openssl ecparam -name prime256v1 -genkey -noout -out "$STATE/pki/$name.key" 2>/dev/null
	openssl req -new -key "$STATE/pki/$name.key" -subj "$subject" -out "$STATE/pki/$name.csr" 2>/dev/null
	local ext=$STATE/pki/$name.ext
	printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' \
		"$([ -n "$sans" ] && echo serverAuth || echo clientAuth)" >"$ext"
	[ -z "$sans" ] || echo "subjectAltName=$sans" >>"$ext"
	openssl x509 -req -in "$STATE/pki/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
		-CAcreateserial -days 30 -extfile "$ext" -out "$STATE/pki/$name.crt" 2>/dev/null
}

kubeconfig() { # NAME CERT
	local file=$STATE/$1.kubeconfig
	"$tools/kubectl" --kubeconfig "$file" config set-cluster nemesis --server "https://$(node_ip):$API_PORT" \
		--certificate-authority "$STATE/pki/ca.crt" --embed-certs >/dev/null
	"$tools/kubectl" --kubeconfig "$file" config set-credentials "$2" --client-certificate "$STATE/pki/$2.crt" \
		--client-key "$STATE/pki/$2.key" --embed-certs >/dev/null
	"$tools/kubectl" --kubeconfig "$file" config set-context nemesis --cluster nemesis --user "$2" >/dev/null
	"$tools/kubectl" --kubeconfig "$file" config use-context nemesis >/dev/null
}

render() { # TEMPLATE OUT
	sed -e "s|@STATE@|$STATE|g" -e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@POD_GATEWAY@|$POD_GATEWAY|g" \
		-e "s|@DNS_IP@|$DNS_IP|g" -e "s|@NODE@|$NODE|g" "$1" >"$2"
}

start() {
	for tool in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
		[ -x "$tools/$tool" ] || die "$tools/$tool is missing: run make tools"
	done
	for image in nemesis envoy pause postgres redis coredns; do
		[ -s "$root/bin/images/$image.tar" ] || die "bin/images/$image.tar is missing: run make images"
	done
	exec 9>"$LOCK"
	if ! flock -n 9; then
		log "another node holds $LOCK; waiting up to ${NEMESIS_CLUSTER_LOCK_WAIT:-600}s"
		flock -w "${NEMESIS_CLUSTER_LOCK_WAIT:-600}" 9 || die "the node of $LOCK is still running"
	fi
	[ ! -d "$STATE" ] || die "$STATE exists: a node was not taken down; run $0 down"
	mkdir -p "$STATE"/{pki,pids,cni/net.d,etcd} "$LOGS"
	owner=1
	# The holder of the lock: down kills it last.
	sleep infinity </dev/null >/dev/null 2>&1 &
	echo $! >"$STATE/pids/lock"
	exec 9>&-

	for s in "${SYSCTLS[@]}"; do
		echo "$s=$(sysctl -n "$s")" >>"$STATE/sysctl.saved"
	done
	for p in "${FIXED_PATHS[@]}"; do
		[ -e "$p" ] || echo "$p" >>"$STATE/paths.created"
	done
	ls /run/netns 2>/dev/null >"$STATE/netns.before" || true
	sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

	log "certificates"
	local ip
	ip=$(node_ip)
	openssl ecparam -name prime256v1 -genkey -noout -out "$STATE/pki/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$STATE/pki/ca.key" -subj /CN=nemesis-cluster-ca -days 30 -out "$STATE/pki/ca.crt" 2>/dev/null
	cert apiserver /CN=kube-apiserver \
		"IP:$ip,IP:127.0.0.1,IP:$KUBERNETES_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
	cert admin "/O=system:masters/CN=nemesis-admin"
	cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client"
	cert node "/O=system:nodes/CN=system:node:$NODE"
	cert controller-manager /CN=system:kube-controller-manager
	cert scheduler /CN=system:kube-scheduler
	cert kube-proxy /CN=system:kube-proxy
	openssl ecparam -name prime256v1 -genkey -noout -out "$STATE/pki/sa.key" 2>/dev/null
	openssl ec -in "$STATE/pki/sa.key" -pubout -out "$STATE/pki/sa.pub" 2>/dev/null
	for c in admin node controller-manager scheduler kube-proxy; do kubeconfig "$c" "$c"; done

	log "etcd and kube-apiserver"
	run etcd "$tools/etcd" --data-dir "$STATE/etcd" --name nemesis \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls http://127.0.0.1:$((ETCD_PORT + 10)) --initial-advertise-peer-urls http://127.0.0.1:$((ETCD_PORT + 10)) \
		--initial-cluster nemesis=http://127.0.0.1:$((ETCD_PORT + 10)) --unsafe-no-fsync
	run kube-apiserver "$tools/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address 0.0.0.0 --secure-port "$API_PORT" --advertise-address "$ip" \
		--service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
		--client-ca-file "$STATE/pki/ca.crt" --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
		--kubelet-preferred-address-types InternalIP \
		--kubelet-client-certificate "$STATE/pki/apiserver-kubelet.crt" --kubelet-client-key "$STATE/pki/apiserver-kubelet.key" \
		--service-account-key-file "$STATE/pki/sa.pub" --service-account-signing-key-file "$STATE/pki/sa.key" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--cert-dir "$STATE/pki/apiserver-generated"
	wait_for kube-apiserver 120 kubectl get --raw /readyz

	log "kube-controller-manager and kube-scheduler"
	run kube-controller-manager "$tools/kube-controller-manager" --kubeconfig "$STATE/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$STATE/controller-manager.kubeconfig" --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
		--service-account-private-key-file "$STATE/pki/sa.key" --root-ca-file "$STATE/pki/ca.crt" \
		--service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR" --allocate-node-cidrs=false \
		--cert-dir "$STATE/pki/controller-manager-generated"
	run kube-scheduler "$tools/kube-scheduler" --kubeconfig "$STATE/scheduler.kubeconfig" \
		--authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false

	log "containerd"
	render "$here/containerd.toml" "$STATE/containerd.toml"
	render "$here/cni.conflist" "$STATE/cni/net.d/10-nemesis.conflist"
	run containerd containerd --config "$STATE/containerd.toml"
	wait_for containerd 60 ctr version
	log "loading bin/images into containerd"
	for image in "$root"/bin/images/*.tar; do
		ctr images import --no-unpack "$image" >/dev/null
	done

	log "kubelet and kube-proxy"
	render "$here/kubelet.yaml" "$STATE/kubelet.yaml"
	render "$here/kube-proxy.yaml" "$STATE/kube-proxy.yaml"
	run kubelet "$tools/kubelet" --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/node.kubeconfig" \
		--root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet-pki" \
		--hostname-override "$NODE" --node-ip "$ip"
	run kube-proxy "$tools/kube-proxy" --config "$STATE/kube-proxy.yaml"
	wait_for "node $NODE" 120 kubectl wait --for=condition=Ready "node/$NODE" --timeout=2s

	log "CoreDNS"
	render "$here/coredns.yaml" "$STATE/coredns.yaml"
	kubectl apply -f "$STATE/coredns.yaml" >/dev/null
	wait_for CoreDNS 180 kubectl -n kube-system wait --for=condition=Available deployment/coredns --timeout=2s

	cp "$STATE/admin.kubeconfig" "$LOGS/kubeconfig"
	log "node $NODE ready: KUBECONFIG=$LOGS/kubeconfig (API https://$ip:$API_PORT, logs in $LOGS)"
}

# kill_pid FILE: stops the process whose pid FILE holds, SIGKILL after 10 s.
kill_pid() {
	local pid
	pid=$(cat "$1" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null || return 0
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
}

# Processes started by this node's containerd: its shims, which name its
# socket on their command line, and the containers under them.
shim_pids() {
	local p
	for p in /proc/[0-9]*; do
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "-address $STATE/containerd.sock " && echo "${p#/proc/}"
	done
	return 0
}

# Deletes the rules that jump to KUBE-* chains, then those chains: the ones
# kube-proxy --cleanup leaves (the kubelet's canaries and firewall).
remove_kube_chains() {
	local cmd=$1 table rule chain
	for table in filter nat mangle; do
		"$cmd" -t "$table" -S >/dev/null 2>&1 || continue
		{ "$cmd" -t "$table" -S | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' || true; } | while read -r rule; do
			eval "$cmd -t $table ${rule/-A/-D}" || true
		done
		for chain in $("$cmd" -t "$table" -S | sed -n 's/^-N \(KUBE-[A-Z0-9-]*\)$/\1/p'); do
			"$cmd" -t "$table" -F "$chain" 2>/dev/null || true
		done
		for chain in $("$cmd" -t "$table" -S | sed -n 's/^-N \(KUBE-[A-Z0-9-]*\)$/\1/p'); do
			"$cmd" -t "$table" -X "$chain" 2>/dev/null || true
		done
	done
}

down() {
	[ -d "$STATE" ] || {
		log "no node is running"
		return 0
	}
	log "stopping the node"
	kill_pid "$STATE/pids/kubelet"
	kill_pid "$STATE/pids/kube-proxy"
	# Every container and sandbox of this node's containerd.
	local pids
	pids=$(shim_pids)
	for pid in $pids; do
		pkill -KILL -P "$pid" 2>/dev/null || true
		kill -KILL "$pid" 2>/dev/null || true
	done
	kill_pid "$STATE/pids/containerd"
	for c in kube-controller-manager kube-scheduler kube-apiserver etcd; do
		kill_pid "$STATE/pids/$c"
	done
	[ ! -x "$tools/kube-proxy" ] || "$tools/kube-proxy" --cleanup >/dev/null 2>&1 || true
	remove_kube_chains iptables
	remove_kube_chains ip6tables

	# Mounts under the node's folders (volumes, rootfs, shm) and its pods'
	# network namespaces, deepest first.
	{ findmnt -rn -o TARGET | grep -E "^($STATE|/run/containerd|/var/lib/kubelet)/" || true; } | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
	for ns in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do
		grep -qxF "$ns" "$STATE/netns.before" 2>/dev/null && continue
		umount -l "/run/netns/$ns" 2>/dev/null || true
		rm -f "/run/netns/$ns"
	done
	ip link del "$BRIDGE" 2>/dev/null || true
	# The pods' cgroups (cgroupfs driver: kubepods in every hierarchy).
	for hierarchy in /sys/fs/cgroup/*/; do
		[ -d "$hierarchy/kubepods" ] || continue
		find "$hierarchy/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	while IFS='=' read -r name value; do
		sysctl -qw "$name=$value" || log "could not restore $name=$value"
	done <"$STATE/sysctl.saved"
	if [ -f "$STATE/paths.created" ]; then
		while read -r p; do rm -rf "$p"; done <"$STATE/paths.created"
	fi
	if findmnt -rn -o TARGET | grep -q "^$STATE/"; then
		log "mounts are left under $STATE; not removing it"
		findmnt -rn -o TARGET | grep "^$STATE/" >&2
		return 1
	fi
	cp "$STATE/pids/lock" "/tmp/nemesis-cluster-lock.$$"
	rm -rf "$STATE"
	kill_pid "/tmp/nemesis-cluster-lock.$$"
	rm -f "/tmp/nemesis-cluster-lock.$$"
	log "node removed"
}

logs() {
	for f in "$LOGS"/*.log; do
		[ -f "$f" ] || continue
		echo "--- $(basename "$f") (last 60 lines) ---"
		tail -n 60 "$f"
	done
}

# Set once this process holds the lock and made $STATE: only then may a
# failure take the node down.
owner=
case ${1:-} in
up)
	trap '[ -z "$owner" ] || down' EXIT
	trap 'exit 130' INT TERM
	start
	echo
	echo "export KUBECONFIG=$LOGS/kubeconfig"
	echo "Ctrl-C takes the node down."
	wait "$(cat "$STATE/pids/lock")" || true
	;;
start)
	trap 'rc=$?; [ -z "$owner" ] || [ $rc -eq 0 ] || down' EXIT
	start
	;;
down) down ;;
logs) logs ;;
*)
	echo "usage: $0 up|start|down|logs" >&2
	exit 2
	;;
esac
