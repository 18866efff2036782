#!/usr/bin/env bash
# The README's run command: kbeast-query on its embedded default, a local LanceDB directory
# (./.kbeast/data) with the built-in hash embedder, on http://127.0.0.1:8080.
# Installs what the build needs first. Extra arguments go to `kbeast-query serve`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kbeast/target}"
"$root/scripts/install-build-deps.sh"
data="${KBEAST_DATA:-$root/.kbeast/data}"
listen="${KBEAST_LISTEN:-127.0.0.1:8080}"
mkdir -p "$data"
echo "kbeast-query: data in $data, listening on http://$listen"
echo "API keys: generated at first start in $data/api-keys.yaml (one admin key)"
# Debug by default: it shares the test build (a cold release build takes about 40 minutes here).
profile=()
[ "${KBEAST_RELEASE:-}" = "1" ] && profile=(--release)
exec cargo run --locked "${profile[@]}" -p kbeast-query -- serve --data "$data" --listen "$listen" "$@"
