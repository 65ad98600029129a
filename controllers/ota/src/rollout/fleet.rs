//! What the rollout controller knows of every Device: a compact view kept from the Device
//! watch (whose cache keeps nothing), grouped by namespace.
//!
//! A view holds only what planning and progress read — labels, model, versions, the
//! assignment and the latest report — with repeated strings (label keys and values, models,
//! versions, error codes) shared through an [`Interner`], so 100,000 Devices cost a few
//! hundred bytes each. A watch event costs a hash lookup and tells which Devices changed in
//! a way the controller cares about; a heartbeat that only moves `lastSeen` is reported too
//! (offline devices come back with it) but compares cheaply.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use flotilla_crds::Device;
use flotilla_crds::common::labels;
use flotilla_crds::device::UpdateState;
use jiff::Timestamp;
use kube::core::{DeserializeGuard, SelectorExt};
use kube::runtime::watcher;

/// A Device, namespaced: `(namespace, name)`.
pub type DeviceKey = (Arc<str>, Arc<str>);

/// Shares equal strings.
#[derive(Debug, Default)]
pub struct Interner(HashSet<Arc<str>>);

impl Interner {
    /// The shared copy of `value`.
    pub fn get(&mut self, value: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(value) {
            return shared.clone();
        }
        let shared: Arc<str> = value.into();
        self.0.insert(shared.clone());
        shared
    }
}

/// `spec.firmware`, as the controller reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// Desired version.
    pub version: Arc<str>,
    /// Its FirmwareRelease.
    pub release: Arc<str>,
    /// The rollout that assigned it.
    pub rollout: Option<Arc<str>>,
    /// The gateway action id.
    pub action_id: i64,
    /// Attempt at this version, from 1.
    pub attempt: u32,
    /// When it was assigned.
    pub assigned_at: Option<Timestamp>,
    /// The version before the assignment.
    pub previous_version: Option<Arc<str>>,
    /// Its release.
    pub previous_release: Option<Arc<str>>,
}

/// `status.update`, as the controller reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    /// The update's state.
    pub state: UpdateState,
    /// The action it is about.
    pub action_id: Option<i64>,
    /// The error code, when it failed.
    pub error_code: Option<Arc<str>>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
}

/// One Device, as the controller reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceView {
    /// Labels, sorted by key.
    pub labels: Box<[(Arc<str>, Arc<str>)]>,
    /// `spec.model`.
    pub model: Arc<str>,
    /// `spec.approved` is not false (admitted devices only get updates).
    pub approved: bool,
    /// `status.currentVersion`.
    pub current_version: Option<Arc<str>>,
    /// `status.lastSeen`.
    pub last_seen: Option<Timestamp>,
    /// `status.lastBootAt`.
    pub last_boot_at: Option<Timestamp>,
    /// The `flotilla.dev/rollout` label.
    pub rollout_label: Option<Arc<str>>,
    /// `spec.firmware`.
    pub assigned: Option<Assigned>,
    /// `status.update`.
    pub reported: Option<Reported>,
    /// `metadata.generation`: the precondition of an assignment (it moves with the spec only,
    /// so a status report or heartbeat between reading and writing does not spoil it).
    pub generation: Option<i64>,
}

impl DeviceView {
    /// The labels as a map (for selector matching).
    pub fn label_map(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Whether `selector` selects the Device.
    pub fn selected_by(&self, selector: &kube::core::Selector) -> bool {
        selector.matches(&self.label_map())
    }
}

/// Views by namespace, then name.
type ByNamespace = HashMap<Arc<str>, HashMap<Arc<str>, DeviceView>>;

/// Every Device's view, by namespace and name.
#[derive(Debug, Default)]
pub struct Fleet {
    namespaces: ByNamespace,
    strings: Interner,
    relisting: Option<ByNamespace>,
}

impl Fleet {
    /// Takes one Device watch event in; returns the Devices whose view changed (appeared,
    /// changed or went).
    pub fn apply_watcher_event(
        &mut self,
        event: &watcher::Event<DeserializeGuard<Device>>,
    ) -> Vec<DeviceKey> {
        match event {
            watcher::Event::Apply(device) => self.apply(device).into_iter().collect(),
            watcher::Event::Delete(device) => {
                let Some((namespace, name)) = key_parts(device) else {
                    return Vec::new();
                };
                let removed = self
                    .namespaces
                    .get_mut(namespace)
                    .and_then(|devices| devices.remove(name));
                removed
                    .map(|_| (self.strings.get(namespace), self.strings.get(name)))
                    .into_iter()
                    .collect()
            }
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(device) => {
                if self.relisting.is_none() {
                    return self.apply(device).into_iter().collect();
                }
                if let Some((namespace, name, view)) = self.view_of(device) {
                    let relisting = self.relisting.as_mut().expect("checked above");
                    relisting.entry(namespace).or_default().insert(name, view);
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let Some(fresh) = self.relisting.take() else {
                    return Vec::new();
                };
                let old = std::mem::replace(&mut self.namespaces, fresh);
                let mut changed = Vec::new();
                for (namespace, devices) in &self.namespaces {
                    let before = old.get(namespace);
                    for (name, view) in devices {
                        if before.and_then(|b| b.get(name)) != Some(view) {
                            changed.push((namespace.clone(), name.clone()));
                        }
                    }
                }
                for (namespace, devices) in &old {
                    let now = self.namespaces.get(namespace);
                    for name in devices.keys() {
                        if now.is_none_or(|n| !n.contains_key(name)) {
                            changed.push((namespace.clone(), name.clone()));
                        }
                    }
                }
                changed
            }
        }
    }

    fn apply(&mut self, device: &DeserializeGuard<Device>) -> Option<DeviceKey> {
        let (namespace, name, view) = self.view_of(device)?;
        let devices = self.namespaces.entry(namespace.clone()).or_default();
        if devices.get(&name) == Some(&view) {
            return None;
        }
        devices.insert(name.clone(), view);
        Some((namespace, name))
    }

    fn view_of(
        &mut self,
        device: &DeserializeGuard<Device>,
    ) -> Option<(Arc<str>, Arc<str>, DeviceView)> {
        let device = device.0.as_ref().ok()?;
        let namespace = self.strings.get(device.metadata.namespace.as_deref()?);
        let name = self.strings.get(device.metadata.name.as_deref()?);
        let strings = &mut self.strings;
        let labels = device
            .metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (strings.get(k), strings.get(v)))
            .collect();
        let status = device.status.as_ref();
        let assigned = device.spec.firmware.as_ref().map(|f| Assigned {
            version: strings.get(&f.version),
            release: strings.get(&f.release),
            rollout: f.rollout.as_deref().map(|r| strings.get(r)),
            action_id: f.action_id,
            attempt: f.attempt.and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
            assigned_at: f.assigned_at.as_ref().map(|t| t.0),
            previous_version: f.previous.as_ref().map(|p| strings.get(&p.version)),
            previous_release: f
                .previous
                .as_ref()
                .and_then(|p| p.release.as_deref())
                .map(|r| strings.get(r)),
        });
        let reported = status.and_then(|s| s.update.as_ref()).map(|u| Reported {
            state: u.state,
            action_id: u.action_id,
            error_code: u.error.as_ref().map(|e| strings.get(&e.code)),
            finished_at: u.finished_at.as_ref().map(|t| t.0),
        });
        let view = DeviceView {
            labels,
            model: strings.get(&device.spec.model),
            approved: device.spec.approved,
            current_version: status
                .and_then(|s| s.current_version.as_deref())
                .map(|v| strings.get(v)),
            last_seen: status.and_then(|s| s.last_seen.as_ref()).map(|t| t.0),
            last_boot_at: status.and_then(|s| s.last_boot_at.as_ref()).map(|t| t.0),
            rollout_label: device
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::ROLLOUT))
                .map(|r| strings.get(r)),
            assigned,
            reported,
            generation: device.metadata.generation,
        };
        Some((namespace, name, view))
    }

    /// The Device `name` of `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&DeviceView> {
        self.namespaces.get(namespace)?.get(name)
    }

    /// Every Device of `namespace`, in no particular order.
    pub fn namespace(&self, namespace: &str) -> impl Iterator<Item = (&Arc<str>, &DeviceView)> {
        self.namespaces.get(namespace).into_iter().flatten()
    }

    /// Number of Devices known.
    pub fn len(&self) -> usize {
        self.namespaces.values().map(HashMap::len).sum()
    }

    /// Whether no Device is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shared copy of `value`.
    pub fn intern(&mut self, value: &str) -> Arc<str> {
        self.strings.get(value)
    }
}

fn key_parts(device: &DeserializeGuard<Device>) -> Option<(&str, &str)> {
    let meta = match &device.0 {
        Ok(device) => &device.metadata,
        Err(invalid) => &invalid.metadata,
    };
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(
        name: &str,
        labels: serde_json::Value,
        status: serde_json::Value,
    ) -> DeserializeGuard<Device> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
            "metadata": {"name": name, "namespace": "fleet", "labels": labels, "resourceVersion": "1"},
            "spec": {"model": "sensor-v2"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_heartbeat_changes_the_view_but_an_identical_event_does_not() {
        let mut fleet = Fleet::default();
        let d = device(
            "d1",
            serde_json::json!({"ring": "a"}),
            serde_json::json!({"currentVersion": "1.0.0"}),
        );
        assert_eq!(
            fleet
                .apply_watcher_event(&watcher::Event::Apply(d.clone()))
                .len(),
            1
        );
        assert!(
            fleet
                .apply_watcher_event(&watcher::Event::Apply(d))
                .is_empty()
        );
        let seen = device(
            "d1",
            serde_json::json!({"ring": "a"}),
            serde_json::json!({"currentVersion": "1.0.0", "lastSeen": "2030-01-01T00:00:00Z"}),
        );
        assert_eq!(
            fleet
                .apply_watcher_event(&watcher::Event::Apply(seen))
                .len(),
            1
        );
        let view = fleet.get("fleet", "d1").unwrap();
        assert_eq!(view.current_version.as_deref(), Some("1.0.0"));
        assert!(view.approved);
        let selector =
            kube::core::Selector::try_from(
                serde_json::from_value::<
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
                >(serde_json::json!({"matchLabels": {"ring": "a"}}))
                .unwrap(),
            )
            .unwrap();
        assert!(view.selected_by(&selector));
    }

    #[test]
    fn a_relist_reports_what_changed_and_forgets_what_went() {
        let mut fleet = Fleet::default();
        for name in ["d1", "d2"] {
            fleet.apply_watcher_event(&watcher::Event::Apply(device(
                name,
                serde_json::json!({}),
                serde_json::json!({}),
            )));
        }
        fleet.apply_watcher_event(&watcher::Event::Init);
        fleet.apply_watcher_event(&watcher::Event::InitApply(device(
            "d1",
            serde_json::json!({}),
            serde_json::json!({}),
        )));
        fleet.apply_watcher_event(&watcher::Event::InitApply(device(
            "d3",
            serde_json::json!({}),
            serde_json::json!({}),
        )));
        let mut changed: Vec<String> = fleet
            .apply_watcher_event(&watcher::Event::InitDone)
            .into_iter()
            .map(|(_, name)| name.to_string())
            .collect();
        changed.sort();
        assert_eq!(changed, ["d2", "d3"]);
        assert!(fleet.get("fleet", "d2").is_none());
        assert_eq!(fleet.len(), 2);
    }
}
