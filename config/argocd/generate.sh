#!/usr/bin/env bash
# Writes argocd-cm-health.yaml from the scripts in health/: run it after editing a script.
# controllers/flotilla/tests/argocd_health.rs fails when the two differ.
set -euo pipefail
cd "$(dirname "$0")"
{
  cat <<'HEADER'
# Argo CD health checks for Flotilla's kinds: a patch for the argocd-cm ConfigMap (Argo CD 2.x
# and later read `resource.customizations.health.<group>_<Kind>`). Apply it with
#   kubectl -n argocd patch configmap argocd-cm --patch-file config/argocd/argocd-cm-health.yaml
# Each value is exactly the script in config/argocd/health/ (written by generate.sh; a test in
# controllers/flotilla/tests/argocd_health.rs fails when they differ); docs/gitops.md says what
# each kind reports.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
HEADER
  for pair in Plan:plan Subscription:subscription FirmwareRelease:firmwarerelease \
      FirmwareRollout:firmwarerollout Device:device Channel:channel Campaign:campaign; do
    echo "  resource.customizations.health.flotilla.dev_${pair%%:*}: |"
    sed -e 's/^/    /' -e 's/^    $//' "health/${pair##*:}.lua"
  done
} > argocd-cm-health.yaml
