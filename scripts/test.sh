#!/usr/bin/env bash
# The README's test command: installs what the build needs, then format check, clippy with
# warnings denied, and every test of the workspace.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# A persistent target dir outside the clone keeps warm runs fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kbeast/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The recorded real-server exchanges used as test vectors (shared/ sits beside the checkout).
export KBEAST_GOLDEN_DIR="${KBEAST_GOLDEN_DIR:-$root/../shared/k8s-golden}"
if [ ! -d "$KBEAST_GOLDEN_DIR" ]; then
  echo "missing $KBEAST_GOLDEN_DIR: set KBEAST_GOLDEN_DIR to the shared/k8s-golden folder" >&2
  exit 1
fi

"$root/scripts/install-build-deps.sh"
"$root/scripts/install-test-tools.sh"
# The built-in embedder's weights, for its tests (fetched once into ~/.cache/kbeast/models).
KBEAST_BUILTIN_MODEL_DIR=$("$root/scripts/fetch-minilm.sh")
export KBEAST_BUILTIN_MODEL_DIR
# The real control plane the end-to-end tests run on, built once from pinned Go modules into
# ~/.cache/kbeast/k8s (scripts/build-control-plane.sh); a cold build takes a while.
echo "== real control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd)"
KBEAST_K8S_BIN=$("$root/scripts/build-control-plane.sh")
export KBEAST_K8S_BIN

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== dependency policy (cargo deny: licences, bans, sources)"
"$root/scripts/check-dependencies.sh"
echo "== build the shipped binaries (the Dockerfile's command, debug profile)"
"$root/scripts/build-binaries.sh"
# cargo test also builds kbeast-operator and kbeast-query (their integration tests need them);
# the install and end-to-end tests run those binaries from the same target folder.
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, the last often empty).
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
exit "$status"
