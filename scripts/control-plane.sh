#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for tests and the sandbox: etcd, kube-apiserver
# (RBAC on, default admission plugins, service-account keys), kube-controller-manager and
# kube-scheduler, built by scripts/build-control-plane.sh from pinned Go modules.
#
#   scripts/control-plane.sh start DIR   generate certificates in DIR, start the four processes,
#                                        wait until the API server is ready and write
#                                        DIR/admin.kubeconfig (system:masters)
#   scripts/control-plane.sh stop DIR    stop them (SIGTERM, then SIGKILL)
#
# Logs go to DIR/<component>.log, the API server's audit log (every request, metadata only) to
# DIR/audit.log. No node runs here: the tests start their node agent
# (docs/testing.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,12p' "$0" >&2; exit 2; }
[ $# -eq 2 ] || usage
command=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

stop() {
  local pids=()
  for file in "$dir"/*.pid; do
    [ -f "$file" ] || continue
    pids+=("$(cat "$file")")
    rm -f "$file"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "${pids[@]}" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A certificate signed by the cluster CA: name, subject, extensions.
issue() {
  local name=$1 subject=$2 ext=$3
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subject" \
    -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile <(printf '%s\n' "$ext") -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr"
}

kubeconfig() {
  local file=$1 user=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kbeast-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: kbeast-test
  context: {cluster: kbeast-test, user: $user}
current-context: kbeast-test
EOF
}

launch() {
  local name=$1
  shift
  "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

start() {
  stop
  bin=${KBEAST_K8S_BIN:-$("$root/scripts/build-control-plane.sh")}
  pki="$dir/pki"
  mkdir -p "$pki" "$dir/etcd"

  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 30 \
    -subj "/CN=kbeast-test-ca" 2>/dev/null
  local client="extendedKeyUsage=clientAuth"
  # Pods of the node agent reach the API server at their bridge's address, 10.233.<slot>.1
  # (e2e/localcluster/src/kubelet/network.rs), so each of those is a name of the server too.
  local names="IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default"
  names+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  for slot in $(seq 0 255); do names+=",IP:10.233.$slot.1"; done
  issue apiserver "/CN=kube-apiserver" "$(printf '%s\n' "subjectAltName=$names" \
    "extendedKeyUsage=serverAuth")"
  issue admin "/O=system:masters/CN=kubernetes-admin" "$client"
  issue controller-manager "/CN=system:kube-controller-manager" "$client"
  issue scheduler "/CN=system:kube-scheduler" "$client"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

  local etcd_port etcd_peer_port
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port)
  api_port=$(free_port)
  kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
  kubeconfig "$dir/scheduler.kubeconfig" scheduler

  launch etcd "$bin/etcd" --data-dir "$dir/etcd" --name kbeast-test \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "kbeast-test=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn

  # The endpoint reconciler would publish 127.0.0.1 in the `kubernetes` Service, which
  # EndpointSlice validation refuses (loopback); pods find the server through the node agent's
  # KUBERNETES_SERVICE_HOST instead. It listens on every address so that pods can reach it.
  # Every request is audited (metadata only), so tests can count who wrote what.
  cat >"$dir/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
EOF

  launch kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 0.0.0.0 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.0.0.0/16 \
    --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/audit.log" \
    --allow-privileged=true --profiling=false

  local ready=""
  for _ in $(seq 600); do
    if curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
      "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
      ready=yes
      break
    fi
    kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "kube-apiserver did not become ready; last lines of $dir/kube-apiserver.log:" >&2
    tail -20 "$dir/kube-apiserver.log" >&2
    stop
    exit 1
  fi

  launch kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 \
    --kube-api-qps 500 --kube-api-burst 1000
  launch kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
    --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
    --kube-api-qps 500 --kube-api-burst 1000

  # Written last: its presence means the API server answers.
  kubeconfig "$dir/admin.kubeconfig.tmp" admin
  mv "$dir/admin.kubeconfig.tmp" "$dir/admin.kubeconfig"
}

case "$command" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
