#!/usr/bin/env bash
# The benchmark, in one command: kbeast-query against ChromaDB on the same
# deterministic corpus, driven by the same load generator (bench/loadgen).
#
#   bench/run.sh [--sizes 10000,100000] [--skip-chroma] [--out DIR]
#                [--profile release|dev] [--cargo-config KEY=VALUE]...
#
# --profile dev builds the workspace's debug binaries instead (minutes when the
# CI build is warm, but the numbers are not comparable); --cargo-config passes
# e.g. 'profile.dev.package.kbeast-query.opt-level=3' to cargo.
# KBEAST_BENCH_LOADGEN=path uses a prebuilt load generator.
#
# It installs what it needs (protoc for the build, ChromaDB pinned in a venv
# under ~/.cache/kbeast), builds kbeast-query and the load generator in
# release mode, then for each size: starts kbeast-query on a fresh data
# directory, ingests and measures it, stops it, times a restart to ready on the
# data it left, then does the same ingest and measurements against a fresh
# `chroma run`. Results (JSON with machine info) land in
# bench/results/<UTC timestamp>/, with summary.json and summary.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

sizes="10000,100000"
skip_chroma=false
out=""
profile=release
cargo_config=()
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) sizes="$2"; shift 2 ;;
        --skip-chroma) skip_chroma=true; shift ;;
        --out) out="$2"; shift 2 ;;
        --profile) profile="$2"; shift 2 ;;
        --cargo-config) cargo_config+=(--config "$2"); shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

CHROMA_VERSION=1.5.9
cache="${KBEAST_CACHE:-$HOME/.cache/kbeast}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target-release}"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="${out:-$root/bench/results/$stamp}"
work="$cache/bench-work/$stamp"
mkdir -p "$out" "$work"
kb_port=18080
chroma_port=18000
startup_port=18090

log() { echo "[bench $(date -u +%H:%M:%S)] $*" >&2; }

# --- install -----------------------------------------------------------------
command -v protoc >/dev/null || "$root/scripts/install-build-deps.sh"
venv="$cache/chroma-venv"
if ! "$venv/bin/python" -c "import chromadb, sys; sys.exit(chromadb.__version__ != '$CHROMA_VERSION')" 2>/dev/null; then
    log "installing chromadb==$CHROMA_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "chromadb==$CHROMA_VERSION"
fi
log "building kbeast-query and kbeast-loadgen ($profile, $CARGO_TARGET_DIR)"
case "$profile" in
    # One cargo call: the load generator's dependency features are a subset of
    # the server's, so it reuses the server's artefacts.
    release) cargo "${cargo_config[@]}" build --release --locked -p kbeast-query -p kbeast-loadgen
             bin_dir="$CARGO_TARGET_DIR/release" ;;
    # The same package selection as CI's build, so its artefacts are reused.
    dev) cargo "${cargo_config[@]}" build --locked --workspace --bins
         bin_dir="$CARGO_TARGET_DIR/debug" ;;
    *) echo "--profile must be release or dev" >&2; exit 2 ;;
esac
server="$bin_dir/kbeast-query"
loadgen="${KBEAST_BENCH_LOADGEN:-$bin_dir/kbeast-loadgen}"
server_profile="$profile${cargo_config[*]:+ (${cargo_config[*]})}"
export KBEAST_BENCH_SERVER_PROFILE="$server_profile"

# --- processes ---------------------------------------------------------------
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# Waits until URL answers 2xx, or fails after 300 s or when PID died.
wait_ready() {
    local url=$1 pid=$2
    for _ in $(seq 1 3000); do
        curl -sf -o /dev/null "$url" && return 0
        kill -0 "$pid" 2>/dev/null || { echo "server $pid died; see its log" >&2; return 1; }
        sleep 0.1
    done
    echo "$url not ready after 300 s" >&2
    return 1
}

stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
keys="$work/api-keys.yaml"
printf -- '- id: bench\n  secret: %s\n  scopes: [admin]\n' "$secret" >"$keys"

IFS=',' read -r -a size_list <<<"$sizes"
for size in "${size_list[@]}"; do
    # kbeast-query: fresh directory, built-in hash embedder (384 dims), defaults otherwise.
    data="$work/kbeast-$size"
    log "kbeast-query, $size chunks"
    KBEAST_LOG=warn "$server" serve --data "$data" --listen "127.0.0.1:$kb_port" --api-keys "$keys" \
        >"$work/kbeast-$size.log" 2>&1 &
    kb_pid=$!
    pids+=("$kb_pid")
    wait_ready "http://127.0.0.1:$kb_port/readyz" "$kb_pid"
    # 101 settle writes: one more than --optimize-every-commits (100), so the
    # writer's maintenance (compaction, and the vector index at >= 100k chunks,
    # built in the background; the load generator waits for it) has run before
    # searching, as on a server that has been up a while.
    "$loadgen" run --system kbeast --url "http://127.0.0.1:$kb_port" --api-key "$secret" \
        --pid "$kb_pid" --size "$size" --settle-writes 101 --out "$out/kbeast-$size.json"
    stop "$kb_pid"

    log "kbeast-query restart on $size chunks"
    "$loadgen" startup --bin "$server" --data "$data" --api-keys "$keys" --port "$startup_port" \
        --size "$size" --out "$out/startup-$size.json"

    if ! $skip_chroma; then
        log "chroma $CHROMA_VERSION, $size chunks"
        cdata="$work/chroma-$size"
        "$venv/bin/chroma" run --path "$cdata" --host 127.0.0.1 --port "$chroma_port" \
            >"$work/chroma-$size.log" 2>&1 &
        chroma_pid=$!
        pids+=("$chroma_pid")
        wait_ready "http://127.0.0.1:$chroma_port/api/v2/heartbeat" "$chroma_pid"
        "$loadgen" run --system chroma --url "http://127.0.0.1:$chroma_port" \
            --pid "$chroma_pid" --size "$size" --out "$out/chroma-$size.json"
        stop "$chroma_pid"
    fi
    # The data is large (hundreds of MB at 100k) and not needed after the run.
    rm -rf "$data" "$work/chroma-$size"
done

"$loadgen" report --dir "$out"
log "results in $out"
