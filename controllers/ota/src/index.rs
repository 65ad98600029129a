//! The relations of the OTA domain, each an [`Index`] fed by the watch of the kind that holds
//! the reference, named after the question it answers:
//!
//! | Index | Fed by | Answers |
//! |---|---|---|
//! | [`DevicesByVersion`] | Devices | how many Devices of a namespace run a version |
//! | [`ReleasesByVersion`] | FirmwareReleases | which releases of a namespace publish a version |
//! | [`LiveRolloutsByRelease`] | FirmwareRollouts | which non-terminal rollouts use a release |
//!
//! They store keys and counts, never objects: a Device event costs a hash lookup, and a release
//! reconcile reads its counts without listing or scanning Devices.

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla_crds::{Device, FirmwareRelease, FirmwareRollout};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use flotilla_runtime::index::{Index, Key};

/// A value within one namespace: `(namespace, value)`.
pub type Namespaced = (Arc<str>, Arc<str>);

fn namespaced(namespace: &str, value: &str) -> Namespaced {
    (namespace.into(), value.into())
}

/// The name part of a `namespace/name` key.
fn name_of(key: &Key) -> &str {
    key.split_once('/').map_or(&**key, |(_, name)| name)
}

/// The Devices running each version, per namespace, from the Device watch. Only
/// `status.currentVersion` matters: a Device re-reporting the same version touches nothing.
pub struct DevicesByVersion(Index<DeserializeGuard<Device>, Namespaced>);

impl Default for DevicesByVersion {
    fn default() -> Self {
        Self(Index::new(
            |_| None,
            |device: &DeserializeGuard<Device>| running_version(device).into_iter().collect(),
        ))
    }
}

impl DevicesByVersion {
    /// Takes one Device watch event in; returns the `(namespace, version)` pairs whose count
    /// changed (the version a Device left and the one it reports now).
    pub fn apply_watcher_event(
        &mut self,
        event: &watcher::Event<DeserializeGuard<Device>>,
    ) -> BTreeSet<Namespaced> {
        self.0.apply_watcher_event(event).owners
    }

    /// How many Devices in `namespace` run `version`.
    pub fn count(&self, namespace: &str, version: &str) -> usize {
        self.0.count(&namespaced(namespace, version))
    }
}

fn running_version(device: &DeserializeGuard<Device>) -> Option<Namespaced> {
    let device = device.0.as_ref().ok()?;
    let namespace = device.metadata.namespace.as_deref()?;
    let version = device.status.as_ref()?.current_version.as_deref()?;
    Some(namespaced(namespace, version))
}

/// The FirmwareReleases publishing each version, per namespace, from the release watch: maps a
/// Device's version change to the releases whose count it changes.
pub struct ReleasesByVersion(Index<DeserializeGuard<FirmwareRelease>, Namespaced>);

impl Default for ReleasesByVersion {
    fn default() -> Self {
        Self(Index::new(
            |_| None,
            |release: &DeserializeGuard<FirmwareRelease>| {
                let Ok(release) = &release.0 else {
                    return Vec::new();
                };
                release
                    .metadata
                    .namespace
                    .as_deref()
                    .map(|namespace| namespaced(namespace, &release.spec.version))
                    .into_iter()
                    .collect()
            },
        ))
    }
}

impl ReleasesByVersion {
    /// Takes one FirmwareRelease watch event in.
    pub fn apply_watcher_event(
        &mut self,
        event: &watcher::Event<DeserializeGuard<FirmwareRelease>>,
    ) {
        self.0.apply_watcher_event(event);
    }

    /// The releases in `namespace` that publish `version`.
    pub fn releases(
        &self,
        namespace: &str,
        version: &str,
    ) -> Vec<ObjectRef<DeserializeGuard<FirmwareRelease>>> {
        self.0
            .objects(&namespaced(namespace, version))
            .map(|key| ObjectRef::new(name_of(key)).within(namespace))
            .collect()
    }
}

/// The live (not terminal) FirmwareRollouts using each release, per namespace, from the rollout
/// watch. A rollout whose phase becomes terminal, or that switches release, leaves the release
/// it used; both releases are touched.
pub struct LiveRolloutsByRelease(Index<DeserializeGuard<FirmwareRollout>, Namespaced>);

impl Default for LiveRolloutsByRelease {
    fn default() -> Self {
        Self(Index::new(
            |_| None,
            |rollout: &DeserializeGuard<FirmwareRollout>| {
                live_release(rollout).into_iter().collect()
            },
        ))
    }
}

impl LiveRolloutsByRelease {
    /// Takes one FirmwareRollout watch event in; returns the releases whose live rollouts
    /// changed.
    pub fn apply_watcher_event(
        &mut self,
        event: &watcher::Event<DeserializeGuard<FirmwareRollout>>,
    ) -> Vec<ObjectRef<DeserializeGuard<FirmwareRelease>>> {
        self.0
            .apply_watcher_event(event)
            .owners
            .into_iter()
            .map(|(namespace, release)| ObjectRef::new(&release).within(&namespace))
            .collect()
    }

    /// How many live rollouts in `namespace` use `release`.
    pub fn count(&self, namespace: &str, release: &str) -> usize {
        self.0.count(&namespaced(namespace, release))
    }

    /// The names of the live rollouts in `namespace` that use `release`, sorted.
    pub fn rollouts<'a>(
        &'a self,
        namespace: &str,
        release: &str,
    ) -> impl Iterator<Item = &'a str> + use<'a> {
        self.0.objects(&namespaced(namespace, release)).map(name_of)
    }
}

/// The release a rollout holds, if the rollout is live. A rollout that does not decode holds
/// nothing until fixed (it cannot run either).
fn live_release(rollout: &DeserializeGuard<FirmwareRollout>) -> Option<Namespaced> {
    let rollout = rollout.0.as_ref().ok()?;
    let terminal = rollout
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .is_some_and(|phase| phase.is_terminal());
    if terminal {
        return None;
    }
    let namespace = rollout.metadata.namespace.as_deref()?;
    Some(namespaced(namespace, &rollout.spec.release))
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event;

    fn device(namespace: &str, name: &str, version: Option<&str>) -> DeserializeGuard<Device> {
        let mut object = serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": "m1"},
        });
        if let Some(version) = version {
            object["status"] = serde_json::json!({"currentVersion": version});
        }
        serde_json::from_value(object).expect("device")
    }

    fn rollout(
        namespace: &str,
        name: &str,
        release: &str,
        phase: Option<&str>,
    ) -> DeserializeGuard<FirmwareRollout> {
        let mut object = serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"release": release, "selector": {"matchLabels": {"ring": "a"}}},
        });
        if let Some(phase) = phase {
            object["status"] = serde_json::json!({"phase": phase});
        }
        let guard: DeserializeGuard<FirmwareRollout> =
            serde_json::from_value(object).expect("rollout");
        assert!(guard.0.is_ok(), "{:?}", guard.0.as_ref().err());
        guard
    }

    fn pair(namespace: &str, value: &str) -> Namespaced {
        namespaced(namespace, value)
    }

    #[test]
    fn devices_are_counted_per_namespace_and_version() {
        let mut index = DevicesByVersion::default();
        index.apply_watcher_event(&Event::Apply(device("a", "d1", Some("1.0.0"))));
        index.apply_watcher_event(&Event::Apply(device("a", "d2", Some("1.0.0"))));
        index.apply_watcher_event(&Event::Apply(device("b", "d1", Some("1.0.0"))));
        index.apply_watcher_event(&Event::Apply(device("a", "d3", None)));
        assert_eq!(index.count("a", "1.0.0"), 2);
        assert_eq!(index.count("b", "1.0.0"), 1);
        assert_eq!(index.count("a", "2.0.0"), 0);
    }

    #[test]
    fn a_version_change_touches_the_old_and_new_version_and_a_repeat_touches_nothing() {
        let mut index = DevicesByVersion::default();
        index.apply_watcher_event(&Event::Apply(device("a", "d1", Some("1.0.0"))));
        let touched = index.apply_watcher_event(&Event::Apply(device("a", "d1", Some("2.0.0"))));
        assert_eq!(
            touched,
            BTreeSet::from([pair("a", "1.0.0"), pair("a", "2.0.0")])
        );
        assert_eq!(
            (index.count("a", "1.0.0"), index.count("a", "2.0.0")),
            (0, 1)
        );
        let again = index.apply_watcher_event(&Event::Apply(device("a", "d1", Some("2.0.0"))));
        assert!(again.is_empty(), "a heartbeat must wake no release");
        let gone = index.apply_watcher_event(&Event::Delete(device("a", "d1", Some("2.0.0"))));
        assert_eq!(gone, BTreeSet::from([pair("a", "2.0.0")]));
        assert_eq!(index.count("a", "2.0.0"), 0);
    }

    #[test]
    fn a_relist_corrects_counts_and_touches_only_what_changed() {
        let mut index = DevicesByVersion::default();
        for (name, version) in [("d1", "1.0.0"), ("d2", "1.0.0"), ("d3", "2.0.0")] {
            index.apply_watcher_event(&Event::Apply(device("a", name, Some(version))));
        }
        index.apply_watcher_event(&Event::Init);
        // d2 went while the watch was down; d3 moved to 1.0.0; d1 is unchanged.
        index.apply_watcher_event(&Event::InitApply(device("a", "d1", Some("1.0.0"))));
        index.apply_watcher_event(&Event::InitApply(device("a", "d3", Some("1.0.0"))));
        let touched = index.apply_watcher_event(&Event::InitDone);
        assert_eq!(
            touched,
            BTreeSet::from([pair("a", "1.0.0"), pair("a", "2.0.0")])
        );
        assert_eq!(
            (index.count("a", "1.0.0"), index.count("a", "2.0.0")),
            (2, 0)
        );
    }

    #[test]
    fn live_rollouts_hold_their_release_until_terminal() {
        let mut index = LiveRolloutsByRelease::default();
        let woken = index.apply_watcher_event(&Event::Apply(rollout("a", "r1", "fw-2", None)));
        assert_eq!(woken, [ObjectRef::new("fw-2").within("a")]);
        index.apply_watcher_event(&Event::Apply(rollout(
            "a",
            "r2",
            "fw-2",
            Some("Progressing"),
        )));
        index.apply_watcher_event(&Event::Apply(rollout(
            "b",
            "r3",
            "fw-2",
            Some("Progressing"),
        )));
        assert_eq!(
            index.rollouts("a", "fw-2").collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        let finished =
            index.apply_watcher_event(&Event::Apply(rollout("a", "r1", "fw-2", Some("Succeeded"))));
        assert_eq!(finished, [ObjectRef::new("fw-2").within("a")]);
        assert_eq!(index.count("a", "fw-2"), 1);
        let moved = index.apply_watcher_event(&Event::Apply(rollout(
            "a",
            "r2",
            "fw-3",
            Some("Progressing"),
        )));
        assert_eq!(
            moved,
            [
                ObjectRef::new("fw-2").within("a"),
                ObjectRef::new("fw-3").within("a")
            ]
        );
        assert_eq!(index.count("a", "fw-2"), 0);
        assert_eq!(index.count("b", "fw-2"), 1);
    }

    #[test]
    fn releases_are_found_by_version() {
        let mut index = ReleasesByVersion::default();
        let release: DeserializeGuard<FirmwareRelease> =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRelease",
                "metadata": {"name": "fw-2", "namespace": "a"},
                "spec": {
                    "version": "2.0.0", "compatibleModels": ["m1"],
                    "artifact": {"url": "https://x/y", "sha256": "a".repeat(64), "sizeBytes": 1},
                },
            }))
            .expect("release");
        index.apply_watcher_event(&Event::Apply(release));
        assert_eq!(
            index.releases("a", "2.0.0"),
            [ObjectRef::new("fw-2").within("a")]
        );
        assert!(index.releases("b", "2.0.0").is_empty());
    }
}
