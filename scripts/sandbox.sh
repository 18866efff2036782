#!/usr/bin/env bash
# The zero-cluster tour, in one command (`make sandbox`): starts a real control plane
# (scripts/control-plane.sh) and a node agent that runs pods as local processes, installs the
# chart's CRD and RBAC, starts the operator as the chart's ServiceAccount, creates
# config/samples/minimal.yaml, ingests this repository's docs/ as a sample corpus through the
# project's Service, and prints a search command that works. Ctrl-C stops everything.
#
#   scripts/sandbox.sh [--port 18080] [--check]
#
# --check runs the printed search itself and exits (used by the e2e test). Needs root (the node
# agent puts each pod in its own network namespace). State lives in $KBEAST_SANDBOX_DIR
# (default ~/.cache/kbeast/sandbox, wiped at each start).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

port=18080
check=false
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port="$2"; shift 2 ;;
        --check) check=true; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kbeast/target}"
if [ "${KBEAST_SANDBOX_SKIP_BUILD:-}" != "1" ]; then
    "$root/scripts/install-build-deps.sh"
    "$root/scripts/install-test-tools.sh" >/dev/null
    "$root/scripts/build-binaries.sh"
fi
bin="$CARGO_TARGET_DIR/debug"
# The sample uses the built-in embedder; the node agent hands this to the pods, as the query
# image's ENV does.
KBEAST_BUILTIN_MODEL_DIR="${KBEAST_BUILTIN_MODEL_DIR:-$("$root/scripts/fetch-minilm.sh")}"
export KBEAST_BUILTIN_MODEL_DIR
kubectl="${KBEAST_TOOLS_DIR:-$HOME/.cache/kbeast/tools}/bin/kubectl"
dir="${KBEAST_SANDBOX_DIR:-$HOME/.cache/kbeast/sandbox}"
rm -rf "$dir"
mkdir -p "$dir"
export KUBECONFIG="$dir/kubeconfig"
image=ghcr.io/kbeast/kbeast

helm="${KBEAST_TOOLS_DIR:-$HOME/.cache/kbeast/tools}/bin/helm"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$root/scripts/control-plane.sh" stop "$dir/control-plane" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { echo "== $*"; }

step "control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (logs: $dir/control-plane)"
"$root/scripts/control-plane.sh" start "$dir/control-plane"
cp "$dir/control-plane/admin.kubeconfig" "$KUBECONFIG"

step "node agent (log: $dir/node-agent.log)"
api_port=$(awk -F: '/server:/ {print $NF; exit}' "$KUBECONFIG")
"$bin/kbeast-node-agent" --kubeconfig "$KUBECONFIG" --work-dir "$dir/node" --network-id "$port" \
    --api-server-port "$api_port" \
    --image-map "$image=$bin/kbeast-query" \
    --forward "default/svc/docs:8080=$port" >"$dir/node-agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
    "$kubectl" get node kbeast-node >/dev/null 2>&1 && break
    sleep 0.2
done
"$kubectl" wait --for=condition=Ready node/kbeast-node --timeout=60s >/dev/null

step "the chart's CRD and RBAC, and the operator's namespace"
"$kubectl" create namespace kbeast-system >/dev/null
"$helm" template kbeast charts/kbeast --namespace kbeast-system --show-only templates/crds.yaml \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
    | "$kubectl" apply --server-side -f - >/dev/null
"$kubectl" wait --for=condition=Established crd/knowledgeprojects.kbeast.io --timeout=30s >/dev/null

step "kbeast-operator as ServiceAccount kbeast-system/kbeast (log: $dir/operator.log)"
token=$("$kubectl" create token kbeast -n kbeast-system --duration=24h)
server=$(awk '/server:/ {print $2; exit}' "$KUBECONFIG")
cat >"$dir/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster: {server: "$server", certificate-authority: "$dir/control-plane/pki/ca.crt"}
users:
- name: kbeast
  user: {token: "$token"}
contexts:
- name: sandbox
  context: {cluster: sandbox, user: kbeast}
current-context: sandbox
EOF
"$bin/kbeast-operator" run --kubeconfig "$dir/operator.kubeconfig" --operator-namespace kbeast-system \
    --query-image "$image:sandbox" --listen 127.0.0.1:0 >"$dir/operator.log" 2>&1 &
pids+=($!)

step "KnowledgeProject default/docs from config/samples/minimal.yaml"
"$kubectl" apply --server-side -n default -f config/samples/minimal.yaml >/dev/null
"$kubectl" wait -n default --for=condition=Ready kp/docs --timeout=300s
"$kubectl" get -n default kp/docs

read_secret() {
    "$kubectl" get -n default secret docs-api-keys -o "jsonpath={.data.$1}" | base64 -d
}
write_key=$(read_secret write-key)
read_key=$(read_secret read-key)
url="http://127.0.0.1:$port"

step "ingesting docs/*.md through the Service ($url)"
python3 - "$url" "$write_key" docs/*.md <<'EOF'
import json, sys, urllib.request
url, key, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
# One document per request: each stays well inside the server's request timeout, even with
# the built-in model on a debug build.
documents, chunks = 0, 0
for p in paths:
    document = {"id": p.split("/")[-1][:-3], "text": open(p, encoding="utf-8").read(), "source": p}
    request = urllib.request.Request(
        url + "/v1/documents", data=json.dumps({"documents": [document]}).encode(), method="POST",
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        body = json.load(response)
    documents += len(body["documents"])
    chunks += sum(d["chunks"] for d in body["documents"])
print(f"   {documents} documents, {chunks} chunks")
EOF

search="curl -s -H 'Authorization: Bearer $read_key' -H 'Content-Type: application/json' \\
  -d '{\"query\": \"how does a failed rollout roll back\", \"mode\": \"hybrid\", \"top_k\": 3}' \\
  $url/v1/search"
echo
echo "Search the sample corpus:"
echo
echo "$search"
echo
echo "kubectl: export KUBECONFIG=$KUBECONFIG   (kubectl: $kubectl)"

if $check; then
    step "running the search"
    eval "$search" | python3 -c '
import json, sys
body = json.load(sys.stdin)
hits = body["hits"]
assert hits, "no hits"
for hit in hits:
    print("   %.4f  %s" % (hit["score"], hit["doc_id"]))
assert "rollouts" in [h["doc_id"] for h in hits], "the rollouts page is among the answers to a question about rollbacks"
'
    exit 0
fi
echo "Ctrl-C stops the sandbox."
wait
