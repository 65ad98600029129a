//! Full objects, status included, survive JSON → type → JSON unchanged (no field is dropped,
//! renamed or reformatted), and the status they carry is valid against the CRD schema.

mod support;

use flotilla_crds::{Campaign, Channel, FirmwareRelease, FirmwareRollout, Plan, Subscription};
use kube::CustomResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn round_trip<K>(value: Value)
where
    K: CustomResourceExt + DeserializeOwned + Serialize,
{
    let object: K = serde_json::from_value(value.clone()).expect("parses");
    assert_eq!(
        serde_json::to_value(&object).unwrap(),
        value,
        "JSON changed in a round trip"
    );
    support::assert_admitted::<K>(&value, None);
}

fn ready(generation: i64) -> Value {
    json!({"type": "Ready", "status": "True", "reason": "Reconciled", "message": "", "observedGeneration": generation,
           "lastTransitionTime": "2030-01-01T00:00:00Z"})
}

#[test]
fn plan() {
    round_trip::<Plan>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan", "metadata": {"name": "team"},
        "spec": {"displayName": "Team", "quota": {"hard": {"pods": "20", "requests.cpu": "4"}}, "features": {"sso": true},
                 "trialDays": 14, "gracePeriodDays": 7, "networkIsolation": true},
        "status": {"phase": "Ready", "conditions": [ready(3),
                   {"type": "InUse", "status": "True", "reason": "ReferencedBySubscriptions", "message": "acme, globex",
                    "lastTransitionTime": "2030-01-01T00:00:00Z"}],
                   "observedGeneration": 3, "subscriptions": 2},
    }));
}

#[test]
fn subscription() {
    round_trip::<Subscription>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": "acme"},
        "spec": {"plan": "team", "namespaces": ["acme-prod"], "state": "Active", "trial": true, "deletionPolicy": "Delete",
                 "payment": {"state": "PastDue", "since": "2030-02-01T00:00:00Z"}},
        "status": {"phase": "PastDue", "conditions": [ready(2)], "observedGeneration": 2, "plan": "team",
                   "trialEndsAt": "2030-01-15T00:00:00Z", "pastDueSince": "2030-02-01T00:00:00Z",
                   "namespaces": ["acme-prod"], "usage": {"pods": "3", "requests.cpu": "1500m"},
                   "entitlements": {"pods": "20", "requests.cpu": "4"}},
    }));
}

#[test]
fn channel() {
    round_trip::<Channel>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel", "metadata": {"name": "slack", "namespace": "comms"},
        "spec": {"type": "Slack", "slack": {"webhookUrlSecretRef": {"name": "slack", "key": "url"}}, "timeout": "10s"},
        "status": {"phase": "Ready", "conditions": [ready(1)], "observedGeneration": 1},
    }));
}

#[test]
fn campaign() {
    round_trip::<Campaign>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Campaign", "metadata": {"name": "launch", "namespace": "comms"},
        "spec": {
            "audience": {"holdoutPercent": 5},
            "channels": {"mode": "All", "names": ["slack", "mail"]},
            "message": {"body": "We launched!"},
            "retry": {"maxAttempts": 5, "initialBackoff": "30s", "maxBackoff": "480s", "jitterPercent": 10},
            "suspend": false, "cancel": false,
        },
        "status": {
            "phase": "Running", "conditions": [ready(1)], "observedGeneration": 1, "audienceSize": 1000,
            "counts": {"targeted": 950, "heldOut": 50, "optedOut": 0, "sent": 900, "failed": 10, "pending": 40},
            "variants": [{"name": "default", "targeted": 950, "sent": 900, "failed": 10, "pending": 40}],
            "channels": [{"name": "slack", "sent": 890, "failed": 12}, {"name": "mail", "sent": 10, "failed": 0}],
            "failureReasons": [{"reason": "HTTP 410 Gone", "count": 10}],
            "nextSendAt": "2030-01-01T00:01:00Z", "startedAt": "2030-01-01T00:00:00Z",
        },
    }));
}

#[test]
fn firmware_release() {
    round_trip::<FirmwareRelease>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRelease", "metadata": {"name": "fw-2-4-1", "namespace": "fleet"},
        "spec": {"version": "2.4.1", "artifact": {"url": "https://fw.example.com/2.4.1.bin", "sha256": "0".repeat(64), "sizeBytes": 1024},
                 "compatibleModels": ["sensor-v2"]},
        "status": {"phase": "Ready", "conditions": [ready(1)], "observedGeneration": 1, "rollouts": ["spring"], "devices": 12},
    }));
}

#[test]
fn firmware_rollout() {
    round_trip::<FirmwareRollout>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout", "metadata": {"name": "spring", "namespace": "fleet"},
        "spec": {
            "release": "fw-2-4-1", "selector": {"matchLabels": {"ring": "canary"}},
            "waves": [{"percent": 10, "pause": {"untilResumed": true}}, {"percent": 100}],
            "maxInFlight": 500,
            "failureThreshold": {"overall": {"percent": 5}, "minFinished": 10},
            "deviceTimeout": "1h", "retries": {"limit": 2, "initialBackoff": "1m", "maxBackoff": "30m"},
            "offlineAfter": "24h", "offlinePolicy": "Skip", "soakTime": "10m", "onFailure": "Pause",
            "includeNewDevices": false, "paused": false, "abort": false, "resume": "2030-01-02",
        },
        "status": {
            "phase": "Paused", "conditions": [ready(4)], "observedGeneration": 4, "currentWave": 1,
            "counts": {"targeted": 1000, "pending": 900, "updating": 0, "succeeded": 98, "failed": 2, "skipped": 0},
            "waves": [{"number": 1, "counts": {"targeted": 100, "pending": 0, "updating": 0, "succeeded": 98, "failed": 2, "skipped": 0},
                       "startedAt": "2030-01-01T22:00:00Z", "completedAt": "2030-01-01T23:00:00Z"}],
            "cohorts": [{"model": "sensor-v2", "fromVersion": "2.3.0",
                         "counts": {"targeted": 1000, "pending": 900, "updating": 0, "succeeded": 98, "failed": 2, "skipped": 0}}],
            "failureReasons": [{"reason": "checksum mismatch", "count": 2}],
            "failedDevices": [{"name": "sensor-0042", "reason": "checksum mismatch", "wave": 1, "failedAt": "2030-01-01T22:30:00Z"}],
            "startedAt": "2030-01-01T22:00:00Z", "resumeAtPause": "2030-01-01",
            "plan": {"hash": "a".repeat(64), "version": "2.4.1", "targeted": 1000,
                     "waves": [{"number": 1, "devices": 100}, {"number": 2, "devices": 900, "estimatedFinishAt": "2030-01-03T04:00:00Z"}],
                     "excluded": {"incompatibleModel": 3, "belowMinimumVersion": 1, "alreadyOnVersion": 10, "offline": 4, "heldByAnotherRollout": 0, "unknownVersion": 0}},
        },
    }));
}
