//! Suspending a tenant's workloads without destroying anything, and restoring them exactly.
//!
//! Suspension scales every Deployment and StatefulSet of the tenant to zero and records the
//! replica count it had in the annotation [`REPLICAS_BEFORE_SUSPEND`]; restoration puts that
//! count back and removes the annotation. Both are idempotent: suspending twice keeps the
//! first recorded count (a workload scaled up by hand meanwhile is scaled down again, and
//! still restored to its original count), and restoring only touches annotated workloads.
//!
//! The changes are JSON merge patches rather than server-side apply: `spec.replicas` belongs
//! to the tenant's own tooling, and taking it over with an apply would make their next apply
//! conflict. Each patch carries the `resourceVersion` it was computed from, so a workload that
//! changed in between is refused by the API server (409) and recomputed on the retry instead
//! of recording a stale count.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use serde_json::{Value, json};

/// The annotation that keeps a workload's replica count while its tenant is suspended.
pub const REPLICAS_BEFORE_SUSPEND: &str = "flotilla.dev/replicas-before-suspend";

/// `spec.replicas` of a Deployment or StatefulSet that does not set it (the API default).
const DEFAULT_REPLICAS: i32 = 1;

/// The kinds of workloads suspension scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
}

/// Which workload a patch is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What suspension needs to know about a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Which workload.
    pub target: WorkloadRef,
    /// `spec.replicas` (`None` means the API default, 1).
    pub replicas: Option<i32>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.resourceVersion`, sent back as a precondition.
    pub resource_version: Option<String>,
}

impl Workload {
    /// The workload view of a Deployment; `None` without a name or namespace.
    pub fn from_deployment(deployment: &Deployment) -> Option<Self> {
        let replicas = deployment.spec.as_ref().and_then(|s| s.replicas);
        Self::from_parts(WorkloadKind::Deployment, &deployment.metadata, replicas)
    }

    /// The workload view of a StatefulSet; `None` without a name or namespace.
    pub fn from_stateful_set(stateful_set: &StatefulSet) -> Option<Self> {
        let replicas = stateful_set.spec.as_ref().and_then(|s| s.replicas);
        Self::from_parts(WorkloadKind::StatefulSet, &stateful_set.metadata, replicas)
    }

    fn from_parts(
        kind: WorkloadKind,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        replicas: Option<i32>,
    ) -> Option<Self> {
        Some(Self {
            target: WorkloadRef {
                kind,
                namespace: meta.namespace.clone()?,
                name: meta.name.clone()?,
            },
            replicas,
            annotations: meta.annotations.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
        })
    }

    fn recorded(&self) -> Option<&str> {
        self.annotations
            .get(REPLICAS_BEFORE_SUSPEND)
            .map(String::as_str)
    }
}

/// A JSON merge patch (`application/merge-patch+json`) for one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadPatch {
    /// The workload to patch.
    pub target: WorkloadRef,
    /// The merge patch body.
    pub patch: Value,
}

/// A workload whose recorded replica count is not a non-negative integer (edited by hand).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableCount {
    /// The workload.
    pub target: WorkloadRef,
    /// What the annotation said.
    pub value: String,
}

/// The patches that suspend `workloads`: scale each to zero, recording its current count
/// unless a count is already recorded. Workloads already at zero with a record need nothing.
pub fn suspend(workloads: &[Workload]) -> Vec<WorkloadPatch> {
    workloads
        .iter()
        .filter_map(|workload| {
            let patch = if workload.recorded().is_some() {
                // Already suspended: keep the first record, only make sure it is at zero.
                if workload.replicas == Some(0) {
                    return None;
                }
                json!({ "spec": { "replicas": 0 } })
            } else {
                let before = workload.replicas.unwrap_or(DEFAULT_REPLICAS);
                json!({
                    "metadata": { "annotations": { REPLICAS_BEFORE_SUSPEND: before.to_string() } },
                    "spec": { "replicas": 0 },
                })
            };
            Some(WorkloadPatch {
                target: workload.target.clone(),
                patch: with_precondition(patch, workload.resource_version.as_deref()),
            })
        })
        .collect()
}

/// What restoring the tenant takes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restoration {
    /// The patches: each annotated workload back to its recorded count, annotation removed.
    pub patches: Vec<WorkloadPatch>,
    /// Workloads whose record could not be read: their annotation is removed and their
    /// replica count left as it is (the shell reports them in a Warning Event).
    pub unreadable: Vec<UnreadableCount>,
}

/// The patches that restore `workloads` after a suspension.
pub fn restore(workloads: &[Workload]) -> Restoration {
    let mut restoration = Restoration::default();
    for workload in workloads {
        let Some(recorded) = workload.recorded() else {
            continue;
        };
        let patch = match parse_count(recorded) {
            Some(count) => json!({
                "metadata": { "annotations": { REPLICAS_BEFORE_SUSPEND: null } },
                "spec": { "replicas": count },
            }),
            None => {
                restoration.unreadable.push(UnreadableCount {
                    target: workload.target.clone(),
                    value: recorded.to_owned(),
                });
                json!({ "metadata": { "annotations": { REPLICAS_BEFORE_SUSPEND: null } } })
            }
        };
        restoration.patches.push(WorkloadPatch {
            target: workload.target.clone(),
            patch: with_precondition(patch, workload.resource_version.as_deref()),
        });
    }
    restoration
}

fn parse_count(recorded: &str) -> Option<i32> {
    let trimmed = recorded.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    trimmed.parse().ok()
}

/// Adds `metadata.resourceVersion` to a merge patch: the API server then applies it only to
/// that version of the object.
fn with_precondition(mut patch: Value, resource_version: Option<&str>) -> Value {
    if let Some(version) = resource_version {
        patch["metadata"]["resourceVersion"] = Value::String(version.to_owned());
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, StatefulSetSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use proptest::prelude::*;

    fn workload(name: &str, replicas: Option<i32>, recorded: Option<&str>) -> Workload {
        Workload {
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                namespace: "acme".into(),
                name: name.into(),
            },
            replicas,
            annotations: recorded
                .map(|r| BTreeMap::from([(REPLICAS_BEFORE_SUSPEND.to_owned(), r.to_owned())]))
                .unwrap_or_default(),
            resource_version: Some("42".into()),
        }
    }

    /// Applies a merge patch (RFC 7386) to the workload model, as the API server would.
    fn apply(workload: &Workload, patch: &Value) -> Workload {
        let mut next = workload.clone();
        if let Some(annotations) = patch["metadata"]["annotations"].as_object() {
            for (key, value) in annotations {
                match value {
                    Value::Null => {
                        next.annotations.remove(key);
                    }
                    Value::String(s) => {
                        next.annotations.insert(key.clone(), s.clone());
                    }
                    other => panic!("annotation values are strings, got {other}"),
                }
            }
        }
        if let Some(replicas) = patch["spec"]["replicas"].as_i64() {
            next.replicas = Some(i32::try_from(replicas).unwrap());
        }
        next
    }

    fn apply_all(workloads: &[Workload], patches: &[WorkloadPatch]) -> Vec<Workload> {
        workloads
            .iter()
            .map(|w| {
                patches
                    .iter()
                    .filter(|p| p.target == w.target)
                    .fold(w.clone(), |w, p| apply(&w, &p.patch))
            })
            .collect()
    }

    #[test]
    fn suspension_records_the_count_and_scales_to_zero() {
        let patches = suspend(&[workload("web", Some(3), None)]);
        assert_eq!(patches.len(), 1);
        assert_eq!(
            patches[0].patch,
            json!({
                "metadata": {
                    "annotations": {"flotilla.dev/replicas-before-suspend": "3"},
                    "resourceVersion": "42",
                },
                "spec": {"replicas": 0},
            })
        );
        assert_eq!(patches[0].target.to_string(), "Deployment acme/web");
    }

    #[test]
    fn unset_replicas_are_recorded_as_the_default_and_zero_as_zero() {
        let patches = suspend(&[workload("a", None, None), workload("b", Some(0), None)]);
        assert_eq!(
            patches[0].patch["metadata"]["annotations"][REPLICAS_BEFORE_SUSPEND],
            "1"
        );
        assert_eq!(
            patches[1].patch["metadata"]["annotations"][REPLICAS_BEFORE_SUSPEND],
            "0"
        );
    }

    #[test]
    fn suspending_again_keeps_the_first_record() {
        assert!(suspend(&[workload("web", Some(0), Some("3"))]).is_empty());
        // Scaled up by hand while suspended: back to zero, the record untouched.
        let patches = suspend(&[workload("web", Some(5), Some("3"))]);
        assert_eq!(
            patches[0].patch,
            json!({"metadata": {"resourceVersion": "42"}, "spec": {"replicas": 0}})
        );
    }

    #[test]
    fn restoration_puts_the_count_back_and_drops_the_record() {
        let restoration = restore(&[
            workload("web", Some(0), Some("3")),
            workload("plain", Some(2), None),
        ]);
        assert!(restoration.unreadable.is_empty());
        assert_eq!(
            restoration.patches.len(),
            1,
            "unannotated workloads are left alone"
        );
        assert_eq!(
            restoration.patches[0].patch,
            json!({
                "metadata": {
                    "annotations": {"flotilla.dev/replicas-before-suspend": null},
                    "resourceVersion": "42",
                },
                "spec": {"replicas": 3},
            })
        );
    }

    #[test]
    fn an_unreadable_record_is_dropped_and_reported() {
        for bad in ["three", "-1", "", "3.5", "99999999999"] {
            let restoration = restore(&[workload("web", Some(0), Some(bad))]);
            assert_eq!(restoration.unreadable.len(), 1, "{bad:?}");
            assert_eq!(restoration.unreadable[0].value, bad);
            assert_eq!(
                restoration.patches[0].patch["spec"],
                Value::Null,
                "the replica count is left alone"
            );
            assert_eq!(
                restoration.patches[0].patch["metadata"]["annotations"][REPLICAS_BEFORE_SUSPEND],
                Value::Null
            );
        }
    }

    #[test]
    fn no_precondition_without_a_resource_version() {
        let mut w = workload("web", Some(2), None);
        w.resource_version = None;
        let patch = &suspend(&[w])[0].patch;
        assert_eq!(patch["metadata"].get("resourceVersion"), None);
    }

    #[test]
    fn workloads_are_read_from_deployments_and_stateful_sets() {
        let deployment = Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("acme".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(4),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        let w = Workload::from_deployment(&deployment).unwrap();
        assert_eq!(w.target.kind, WorkloadKind::Deployment);
        assert_eq!(w.replicas, Some(4));
        assert_eq!(w.resource_version.as_deref(), Some("7"));

        let stateful = StatefulSet {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("acme".into()),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec::default()),
            ..StatefulSet::default()
        };
        let w = Workload::from_stateful_set(&stateful).unwrap();
        assert_eq!(w.target.to_string(), "StatefulSet acme/db");
        assert_eq!(w.replicas, None);
        assert_eq!(Workload::from_deployment(&Deployment::default()), None);
    }

    fn arbitrary_workloads() -> impl Strategy<Value = Vec<Workload>> {
        prop::collection::vec((prop::option::of(0..50i32), any::<bool>()), 0..6).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (replicas, statefulset))| {
                    let mut w = workload(&format!("w{i}"), replicas, None);
                    if statefulset {
                        w.target.kind = WorkloadKind::StatefulSet;
                    }
                    w
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn suspend_then_restore_is_exact_and_idempotent(
            workloads in arbitrary_workloads(),
            meddling in prop::collection::vec(0..50i32, 6),
        ) {
            let suspended = apply_all(&workloads, &suspend(&workloads));
            for w in &suspended {
                prop_assert_eq!(w.replicas, Some(0));
            }
            // Suspending again changes nothing.
            prop_assert!(suspend(&suspended).is_empty());

            // Someone scales workloads up while suspended; suspending again still keeps the
            // original record.
            let meddled: Vec<Workload> = suspended
                .iter()
                .zip(&meddling)
                .map(|(w, n)| Workload { replicas: Some(*n), ..w.clone() })
                .collect();
            let resuspended = apply_all(&meddled, &suspend(&meddled));
            prop_assert_eq!(&resuspended, &suspended);

            let restoration = restore(&resuspended);
            prop_assert!(restoration.unreadable.is_empty());
            let restored = apply_all(&resuspended, &restoration.patches);
            for (after, before) in restored.iter().zip(&workloads) {
                prop_assert_eq!(after.replicas, Some(before.replicas.unwrap_or(DEFAULT_REPLICAS)));
                prop_assert_eq!(&after.annotations, &before.annotations);
            }
            // Restoring again changes nothing.
            prop_assert!(restore(&restored).patches.is_empty());
        }
    }
}
