#!/usr/bin/env bash
# Builds the shipped binaries. The Dockerfile runs this with --release; CI runs it as is (debug),
# so the image's build command is exercised on every change.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
profile=()
[ "${1:-}" = "--release" ] && profile=(--release)
# The whole workspace's binaries, so the dependencies' features are the same as in the test
# build (cargo unifies features per build): CI reuses the test build's artefacts here.
cargo build --locked "${profile[@]}" --workspace --bins
