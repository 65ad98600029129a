#!/usr/bin/env bash
# Creates a kind cluster, builds the flotilla image, loads it into the cluster, installs the
# Helm chart and applies the samples. Safe to run again: an existing cluster is reused and the
# chart is upgraded in place.
#
# Needs: docker (with a running engine), kind, kubectl, helm.
# Environment:
#   CLUSTER_NAME  kind cluster name            (default: flotilla)
#   IMAGE         image to build and load      (default: flotilla:dev)
#   NAMESPACE     namespace of the operator    (default: flotilla-system)
set -euo pipefail

CLUSTER_NAME="${CLUSTER_NAME:-flotilla}"
IMAGE="${IMAGE:-flotilla:dev}"
NAMESPACE="${NAMESPACE:-flotilla-system}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "up.sh needs $tool on PATH" >&2; exit 1; }
done

say() { printf '\n==> %s\n' "$*"; }

if kind get clusters | grep -qx "$CLUSTER_NAME"; then
  say "Reusing kind cluster $CLUSTER_NAME"
else
  say "Creating kind cluster $CLUSTER_NAME"
  kind create cluster --name "$CLUSTER_NAME" --config kind/cluster.yaml --wait 120s
fi
# Every kubectl and helm call below targets this cluster, whatever the current context is.
CONTEXT="kind-${CLUSTER_NAME}"

say "Building image $IMAGE"
docker build --tag "$IMAGE" .

say "Loading $IMAGE into the cluster's nodes"
kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"

say "Installing the chart into namespace $NAMESPACE"
# The image is only on the nodes, never in a registry: pullPolicy Never makes a missing image
# fail loudly instead of trying a pull.
helm upgrade --install flotilla charts/flotilla \
  --kube-context "$CONTEXT" \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" \
  --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never \
  --wait --timeout 5m

say "Applying config/samples/"
kubectl --context "$CONTEXT" apply -f config/samples/

say "Flotilla objects"
kubectl --context "$CONTEXT" get flotilla -A

cat <<DONE

Flotilla runs in kind cluster "$CLUSTER_NAME" (kubectl context $CONTEXT).
  kubectl --context $CONTEXT -n $NAMESPACE get pods
  kubectl --context $CONTEXT get flotilla -A
Delete the cluster with: kind delete cluster --name $CLUSTER_NAME
DONE
