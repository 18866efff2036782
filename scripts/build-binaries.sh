#!/usr/bin/env bash
# Builds the shipped binaries. The Dockerfile runs this with --release; CI runs it as is (debug),
# so the image's build command is exercised on every change.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
profile=()
[ "${1:-}" = "--release" ] && profile=(--release)
packages=()
for package in kbeast-operator kbeast-query; do
  if cargo metadata --no-deps --format-version 1 --locked | grep -q "\"name\":\"$package\""; then
    packages+=(-p "$package")
  fi
done
cargo build --locked "${profile[@]}" "${packages[@]}" --bins
