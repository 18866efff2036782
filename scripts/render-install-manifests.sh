#!/usr/bin/env bash
# Regenerates config/install/ (plain manifests for kubectl and kustomize) from the Helm chart
# with default values. tests/ fails when the checked-in files differ.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="${KBEAST_TOOLS_DIR:-$HOME/.cache/kbeast/tools}"
"$root/scripts/install-test-tools.sh"
"$tools/bin/helm" template kbeast "$root/charts/kbeast" --namespace kbeast-system \
  > "$root/config/install/kbeast.yaml"
