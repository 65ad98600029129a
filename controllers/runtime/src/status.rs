//! Writing `status` through the status subresource with server-side apply.
//!
//! Every controller writes the *whole* status it owns, under the field manager `flotilla`, with
//! `force` (the operator is the only legitimate writer of these fields; a conflict would only
//! mean a person edited status by hand). Because the apply carries the full status, fields the
//! controller stops reporting are removed by the server. Nothing is sent when the computed
//! status equals the current one, so a steady-state reconcile costs no write at all.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "flotilla";

/// What [`write_status`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWrite {
    /// The computed status equals the current one; no request was sent.
    Unchanged,
    /// The status was applied.
    Applied,
}

/// Applies `desired` as the status of `name` unless it equals `current`.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    desired: &S,
) -> Result<StatusWrite, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(StatusWrite::Unchanged);
    }
    apply_status(api, name, desired).await?;
    Ok(StatusWrite::Applied)
}

/// Applies `status` on `/status` with server-side apply under [`FIELD_MANAGER`], forcing
/// ownership. `status` can be a typed status or a JSON value (e.g. for an object whose spec
/// could not be decoded).
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let patch = status_patch::<K>(name, status)?;
    api.patch_status(name, &apply_params(), &Patch::Apply(&patch))
        .await
}

/// The server-side apply parameters of every operator write.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The apply body for a status write: type meta, the name, and the status.
pub fn status_patch<K>(
    name: &str,
    status: &impl Serialize,
) -> Result<serde_json::Value, kube::Error>
where
    K: Resource<DynamicType = ()>,
{
    let status = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
    Ok(serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "status": status,
    }))
}

/// Holds back status writes that only refresh counters (devices on a version, devices
/// updated), so that a fleet's worth of Device events costs a few writes per second per
/// object instead of one per event. A change that matters (phase, conditions, generation) is
/// written at once; a held-back write is retried after the returned delay.
#[derive(Debug)]
pub struct WriteThrottle {
    interval: std::time::Duration,
    last: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl WriteThrottle {
    /// At most one counter-only write per `interval` per object.
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            last: std::sync::Mutex::default(),
        }
    }

    /// Whether to hold back a write to `key`: `None` to write now, else how long to wait.
    pub fn hold(&self, key: &str, urgent: bool) -> Option<std::time::Duration> {
        if urgent {
            return None;
        }
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let since = last.get(key)?.elapsed();
        (since < self.interval).then(|| self.interval - since)
    }

    /// Records a write to `key` made now.
    pub fn wrote(&self, key: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(key.to_owned(), std::time::Instant::now());
    }

    /// Forgets `key` (the object is gone).
    pub fn forget(&self, key: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::{Plan, PlanPhase, PlanStatus};

    #[test]
    fn a_throttle_holds_counter_writes_but_not_urgent_ones() {
        let throttle = WriteThrottle::new(std::time::Duration::from_secs(60));
        assert_eq!(throttle.hold("a", false), None, "nothing written yet");
        throttle.wrote("a");
        let held = throttle.hold("a", false).expect("held back");
        assert!(held > std::time::Duration::from_secs(59));
        assert_eq!(throttle.hold("a", true), None);
        assert_eq!(throttle.hold("b", false), None);
        throttle.forget("a");
        assert_eq!(throttle.hold("a", false), None);
    }

    #[test]
    fn the_patch_carries_type_meta_name_and_status_only() {
        let status = PlanStatus {
            phase: Some(PlanPhase::Ready),
            subscriptions: 2,
            observed_generation: Some(4),
            ..PlanStatus::default()
        };
        let patch = status_patch::<Plan>("team", &status).expect("patch");
        assert_eq!(
            patch,
            serde_json::json!({
                "apiVersion": "flotilla.dev/v1alpha1",
                "kind": "Plan",
                "metadata": {"name": "team"},
                "status": {"phase": "Ready", "observedGeneration": 4, "subscriptions": 2},
            })
        );
    }

    #[test]
    fn apply_params_force_the_flotilla_manager() {
        let params = apply_params();
        assert_eq!(params.field_manager.as_deref(), Some(FIELD_MANAGER));
        assert!(params.force);
    }
}
