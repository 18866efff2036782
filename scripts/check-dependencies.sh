#!/usr/bin/env bash
# Checks the dependency graph against deny.toml with a pinned cargo-deny: licences, bans
# (wildcards; duplicate versions are reported) and sources. Installs cargo-deny once into
# ~/.cache/kbeast/tools (a few minutes the first time). Advisories need the RustSec database from
# GitHub, which CI here cannot reach (see deny.toml): set KBEAST_CHECK_ADVISORIES=1 on a machine
# that can, and they are checked too.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO_DENY_VERSION=0.20.2
tools="${KBEAST_TOOLS_DIR:-$HOME/.cache/kbeast/tools}"
deny="$tools/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny"
if [ ! -x "$deny" ]; then
  echo "installing cargo-deny $CARGO_DENY_VERSION"
  # Its own target folder, so the project's build cache is left alone.
  CARGO_TARGET_DIR="$tools/cargo-deny-build" cargo install --locked --quiet \
    "cargo-deny@$CARGO_DENY_VERSION" --root "$tools/cargo-deny-$CARGO_DENY_VERSION"
  rm -rf "$tools/cargo-deny-build"
fi
cd "$root"
"$deny" --log-level error check licenses bans sources
if [ "${KBEAST_CHECK_ADVISORIES:-0}" = 1 ]; then
  "$deny" --log-level error check advisories
else
  echo "advisories not checked (no route to the RustSec database; KBEAST_CHECK_ADVISORIES=1 where there is one)"
fi
