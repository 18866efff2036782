#!/usr/bin/env bash
# Runs kube-rs's own cluster tests (the `#[ignore]`d unit tests of the crates kube,
# kube-client and kube-runtime, at the version this project uses) against the project's real
# test control plane (scripts/control-plane.sh) and its node agent, and prints per crate how
# many passed and failed, with a one-line reason for each failure.
#
#   scripts/kube-rs-cluster-tests.sh
#
# Not part of `make test`/CI: it compiles the three crates with their dev-dependencies (several
# minutes cold) and only checks how kube-rs itself behaves on this cluster. Failures are
# expected where the node agent lacks a kubelet feature (exec, attach, logs, the kubelet API).
#
# The published sources are copied from ~/.cargo/registry into a temporary Cargo workspace
# (never modified in place); `[patch.crates-io]` makes kube -> kube-client/kube-runtime resolve
# to the copies, and the `kube` dev-dependency that `cargo publish` strips from kube-client and
# kube-runtime is restored. Each ignored test runs alone, with a timeout, as the admin user.
#
# Environment:
#   KBEAST_KUBE_RS_VERSION      kube-rs version to test (default 5.0.0)
#   KBEAST_KUBE_RS_TARGET       cargo target dir (default ~/.cache/kbeast/kube-rs-target)
#   KBEAST_KUBE_RS_TEST_TIMEOUT seconds per test (default 120)
#   KBEAST_KUBE_RS_NETWORK_ID   the node agent's --network-id (default 4242)
#   KBEAST_KUBE_RS_KEEP=1       keep the work folder (sources, cluster and test logs)
#   KBEAST_K8S_BIN              control-plane binaries (else scripts/control-plane.sh builds them)
#   KBEAST_NODE_AGENT           node agent binary (default $CARGO_TARGET_DIR/debug/kbeast-node-agent,
#                               built by scripts/build-binaries.sh)
#
# Exit status: 0 if every test passed, 1 if some failed, other values if the run broke.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The project's own build (before CARGO_TARGET_DIR is pointed at the kube-rs build below).
agent_bin=${KBEAST_NODE_AGENT:-${CARGO_TARGET_DIR:-$HOME/.cache/kbeast/target}/debug/kbeast-node-agent}
version=${KBEAST_KUBE_RS_VERSION:-5.0.0}
export CARGO_TARGET_DIR=${KBEAST_KUBE_RS_TARGET:-$HOME/.cache/kbeast/kube-rs-target}
export CARGO_TERM_COLOR=never
test_timeout=${KBEAST_KUBE_RS_TEST_TIMEOUT:-120}
network_id=${KBEAST_KUBE_RS_NETWORK_ID:-4242}
kubectl=${KBEAST_TOOLS_DIR:-$HOME/.cache/kbeast/tools}/bin/kubectl

# crate | cargo features | lib target name. The features are those the ignored tests are gated
# on (plus what kube's lib.rs documents). Left out, as no ignored test needs them: gzip, oauth,
# oidc, socks5, http-proxy, admission, jsonpatch (kube-client, kube), unstable-runtime.
# Not compiled at all upstream: kube-client's custom_client_rustls_configuration and kube's
# list-all discovery test (their #[tokio::test] is commented out).
crates=(
  "kube|runtime,derive|kube"
  "kube-client|rustls-tls,openssl-tls,ws,kubelet-debug|kube_client"
  "kube-runtime||kube_runtime"
)

step() { echo "== $*"; }

[ -x "$agent_bin" ] || { echo "no node agent at $agent_bin (set KBEAST_NODE_AGENT)" >&2; exit 2; }
[ -x "$kubectl" ] || { echo "no kubectl at $kubectl (scripts/install-test-tools.sh)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "the node agent needs root" >&2; exit 2; }
registry=""
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
  if [ -d "$d/kube-$version" ] && [ -d "$d/kube-client-$version" ] \
    && [ -d "$d/kube-runtime-$version" ]; then
    registry=${d%/}
    break
  fi
done
if [ -z "$registry" ]; then
  echo "kube-rs $version sources not in ~/.cargo/registry/src: fetch them first" \
    "(e.g. build a crate depending on kube $version)" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-rs-cluster-tests.XXXXXX")
cluster="$work/control-plane"
logs="$work/logs"
mkdir -p "$logs"
agent_pid=""
started=$(date +%s)

cleanup() {
  local status=$?
  if [ -n "$agent_pid" ]; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  if [ -d "$cluster" ]; then "$root/scripts/control-plane.sh" stop "$cluster" || true; fi
  if [ "${KBEAST_KUBE_RS_KEEP:-}" = 1 ]; then
    echo "work folder kept: $work (test logs in $logs)"
  else
    rm -rf "$work"
  fi
  echo "wall time: $(( $(date +%s) - started ))s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "kube-rs $version sources -> $work/src (target dir $CARGO_TARGET_DIR)"
src="$work/src"
mkdir -p "$src"
for c in kube kube-client kube-runtime; do
  cp -a "$registry/$c-$version" "$src/$c"
  rm -f "$src/$c/Cargo.lock" "$src/$c/.cargo_vcs_info.json" "$src/$c/.cargo-ok"
  # A member's `resolver` is ignored (with a warning); the workspace root sets it.
  sed -i '/^resolver = /d' "$src/$c/Cargo.toml"
  touch -r "$registry/$c-$version/Cargo.toml" "$src/$c/Cargo.toml"
done
# `cargo publish` drops path-only dev-dependencies; the tests of these two use `kube::...`.
# (Appended with the original mtime so warm runs do not rebuild.)
restore_dev_dep() {
  local manifest="$src/$1/Cargo.toml" features=$2
  printf '\n[dev-dependencies.kube]\npath = "../kube"\nfeatures = [%s]\n' "$features" >>"$manifest"
  touch -r "$registry/$1-$version/Cargo.toml" "$manifest"
}
restore_dev_dep kube-client '"derive", "client", "ws"'
restore_dev_dep kube-runtime '"derive", "client", "runtime"'
cat >"$src/Cargo.toml" <<EOF
[workspace]
members = ["kube", "kube-client", "kube-runtime"]
resolver = "2"

[patch.crates-io]
kube-client = { path = "kube-client" }
kube-runtime = { path = "kube-runtime" }
EOF
# Dependency versions: the last resolution of this script, else kube-rs's own lock file.
lock_cache="$CARGO_TARGET_DIR/kube-rs-$version.Cargo.lock"
mkdir -p "$CARGO_TARGET_DIR"
if [ -f "$lock_cache" ]; then
  cp "$lock_cache" "$src/Cargo.lock"
else
  cp "$registry/kube-$version/Cargo.lock" "$src/Cargo.lock"
fi

step "building the test binaries"
declare -A test_bin
for entry in "${crates[@]}"; do
  IFS='|' read -r crate features lib <<<"$entry"
  echo "-- $crate (features: ${features:-default})"
  args=(test --manifest-path "$src/Cargo.toml" -p "$crate" --lib --no-run
    --message-format=json-render-diagnostics)
  [ -n "$features" ] && args+=(--features "$features")
  if ! cargo "${args[@]}" >"$logs/build-$crate.json" 2>"$logs/build-$crate.log"; then
    tail -40 "$logs/build-$crate.log" >&2
    exit 3
  fi
  grep -E '^ *Finished' "$logs/build-$crate.log" || true
  test_bin[$crate]=$(python3 - "$logs/build-$crate.json" "$lib" <<'EOF'
import json, sys
path, lib = sys.argv[1], sys.argv[2]
for line in open(path):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == lib and m["profile"]["test"]:
        print(m["executable"])
EOF
  )
  [ -n "${test_bin[$crate]}" ] || { echo "no test binary for $crate" >&2; exit 3; }
done
cp "$src/Cargo.lock" "$lock_cache"

step "control plane (logs: $cluster)"
"$root/scripts/control-plane.sh" start "$cluster"
export KUBECONFIG="$cluster/admin.kubeconfig"
api_port=$(awk -F: '/server:/ {print $NF; exit}' "$KUBECONFIG")

step "node agent kbeast-node (log: $work/node-agent.log)"
# The ignored tests only use busybox (a default mapping to /bin/sh).
RUST_LOG=${RUST_LOG:-info} "$agent_bin" --kubeconfig "$KUBECONFIG" --work-dir "$work/node" \
  --network-id "$network_id" --api-server-port "$api_port" >"$work/node-agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 300); do
  "$kubectl" get node kbeast-node >/dev/null 2>&1 && break
  kill -0 "$agent_pid" 2>/dev/null || { tail -20 "$work/node-agent.log" >&2; exit 4; }
  sleep 0.2
done
"$kubectl" wait --for=condition=Ready node/kbeast-node --timeout=60s >/dev/null
# Pods need the default ServiceAccount, which the controller-manager creates.
for _ in $(seq 150); do
  "$kubectl" get serviceaccount default -n default >/dev/null 2>&1 && break
  sleep 0.2
done

# A one-line reason from a failed test's output: the error the test returned (an API error
# shortened to its code and message), else the panic message (with left/right of a failed
# assertion) and its location.
reason() {
  python3 - "$1" <<'PY'
import re, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
why = ""
for line in lines:
    if line.startswith("Error: "):
        api = re.search(r'code: (\d+), message: "((?:[^"\\]|\\.)*)"', line)
        why = f"API error {api.group(1)}: {api.group(2)}" if api else line
        why = why.replace('\\"', '"')
        break
if not why:
    for i, line in enumerate(lines):
        m = re.search(r"panicked at (\S+):$", line)
        if m:
            message = [l.strip() for l in lines[i + 1:i + 4] if l.strip()]
            if message and message[0].startswith("assertion"):
                message = [l for l in message[:3] if l.startswith(("assertion", "left", "right"))]
            else:
                message = message[:1]
            why = "; ".join(message) + f" ({m.group(1)})"
            break
if not why:
    why = next((l for l in reversed(lines) if l.strip()), "no output")
print(why[:300])
PY
}

declare -A n_run n_pass n_fail n_other
failures=()
for entry in "${crates[@]}"; do
  IFS='|' read -r crate _ _ <<<"$entry"
  bin=${test_bin[$crate]}
  mapfile -t tests < <("$bin" --list --ignored --format terse | sed -n 's/: test$//p')
  n_other[$crate]=$(( $("$bin" --list --format terse | grep -c ': test$') - ${#tests[@]} ))
  n_run[$crate]=${#tests[@]}
  n_pass[$crate]=0
  n_fail[$crate]=0
  step "$crate: ${#tests[@]} ignored tests (one at a time, timeout ${test_timeout}s each)"
  for t in "${tests[@]}"; do
    log="$logs/$crate--$t.log"
    status=0
    (cd "$src/$crate" && timeout -k 10 "$test_timeout" "$bin" --ignored --exact "$t" \
      --test-threads=1) >"$log" 2>&1 || status=$?
    if [ "$status" = 0 ] && grep -q '^test result: ok. 1 passed' "$log"; then
      n_pass[$crate]=$(( ${n_pass[$crate]} + 1 ))
      echo "   ok      $t"
    else
      n_fail[$crate]=$(( ${n_fail[$crate]} + 1 ))
      if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        why="timed out after ${test_timeout}s"
      else
        why=$(reason "$log")
      fi
      echo "   FAILED  $t: $why"
      failures+=("$crate $t: $why")
    fi
  done
done

echo
step "summary (kube-rs $version, Kubernetes $("$kubectl" version -o json | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
printf '%-14s %8s %8s %8s   %s\n' crate ignored passed failed "(other unit tests, not run)"
total_fail=0
for entry in "${crates[@]}"; do
  IFS='|' read -r crate _ _ <<<"$entry"
  printf '%-14s %8s %8s %8s   %s\n' "$crate" "${n_run[$crate]}" "${n_pass[$crate]}" \
    "${n_fail[$crate]}" "${n_other[$crate]}"
  total_fail=$(( total_fail + ${n_fail[$crate]} ))
done
if [ ${#failures[@]} -gt 0 ]; then
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
[ "$total_fail" = 0 ]
