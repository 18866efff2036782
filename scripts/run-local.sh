#!/usr/bin/env bash
# The README's run command: kbeast-query on its embedded default, a local LanceDB directory
# (./.kbeast/data) with the built-in embedder (all-MiniLM-L6-v2 in process, weights fetched once
# by scripts/fetch-minilm.sh), on http://127.0.0.1:8080.
# Installs what the build needs first. Extra arguments go to `kbeast-query serve`
# (e.g. `--embedder hash` for no model at all).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kbeast/target}"
"$root/scripts/install-build-deps.sh"
data="${KBEAST_DATA:-$root/.kbeast/data}"
listen="${KBEAST_LISTEN:-127.0.0.1:8080}"
KBEAST_EMBEDDER="${KBEAST_EMBEDDER:-builtin}"
KBEAST_BUILTIN_MODEL_DIR="${KBEAST_BUILTIN_MODEL_DIR:-$("$root/scripts/fetch-minilm.sh")}"
export KBEAST_EMBEDDER KBEAST_BUILTIN_MODEL_DIR
mkdir -p "$data"
# Debug by default: it is the test command's build (a cold release build takes about 40 minutes
# here). The test command's build step builds every binary of the workspace; building the same
# set here keeps cargo's feature unification the same, so nothing is recompiled after a test run
# (`cargo run -p kbeast-query` would rebuild dependencies with fewer features).
profile=()
dir=debug
if [ "${KBEAST_RELEASE:-}" = "1" ]; then
  profile=(--release)
  dir=release
fi
"$root/scripts/build-binaries.sh" "${profile[@]}"
echo "kbeast-query: data in $data, listening on http://$listen, embedder $KBEAST_EMBEDDER"
echo "API keys: generated at first start in $data/api-keys.yaml (one admin key)"
exec "$CARGO_TARGET_DIR/$dir/kbeast-query" serve --data "$data" --listen "$listen" "$@"
