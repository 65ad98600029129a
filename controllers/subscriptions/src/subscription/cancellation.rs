//! Letting go of tenant namespaces: on cancellation (all of them) and when the spec stops
//! listing one (that one), following `spec.deletionPolicy`.
//!
//! - `Delete`: each namespace is deleted, and the Subscription waits until it is gone (a
//!   namespace takes a while to terminate: everything in it is deleted first).
//! - `Retain`: each namespace and Flotilla's objects in it are released — the ownerReference
//!   to the Subscription and Flotilla's labels and annotations are removed — and stay. The
//!   children are released rather than deleted so that nothing the tenant relies on (its
//!   quota, its owners' access) vanishes when the Subscription is deleted later: released
//!   objects no longer have an owner for the garbage collector to follow. Workloads are left
//!   as they are: a tenant cancelled while suspended stays scaled to zero, its counts kept in
//!   their annotations for whoever takes the namespaces over.
//!
//! Only namespaces that are the Subscription's (see [`super::namespaces`]) are ever deleted
//! or released, and a handed-over namespace is deleted only when its owner opted it in
//! (`flotilla.dev/allow-deletion: "true"`); otherwise `Delete` releases it like `Retain`.

use flotilla_crds::common::labels;
use flotilla_crds::subscription::DeletionPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value};

use super::namespaces::{Origin, OwnedNamespace};

/// The prefix of Flotilla's own label and annotation keys.
pub const FLOTILLA_KEY_PREFIX: &str = "flotilla.dev/";

/// What letting go of some namespaces takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retirement {
    /// Namespaces to delete now (not already terminating).
    pub delete: Vec<String>,
    /// Namespaces to release (ownerReference, labels and annotations removed), with the
    /// Flotilla children in them.
    pub release: Vec<String>,
    /// Namespaces that still exist and must be gone before the retirement is complete.
    pub waiting_for: Vec<String>,
}

impl Retirement {
    /// Whether nothing is left to wait for once `delete` and `release` have been carried out.
    /// The shell stops at the first failed request, so "carried out" is what it means when it
    /// goes on to record the outcome.
    pub fn is_complete(&self) -> bool {
        self.waiting_for.is_empty()
    }

    /// Whether there is nothing to do at all.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.release.is_empty() && self.waiting_for.is_empty()
    }
}

/// How to let go of `namespaces` under `policy`.
pub fn retire(policy: DeletionPolicy, namespaces: &[OwnedNamespace]) -> Retirement {
    let deletable = |ns: &OwnedNamespace| match ns.origin {
        Origin::Created => policy == DeletionPolicy::Delete,
        Origin::HandedOver { deletable } => deletable && policy == DeletionPolicy::Delete,
    };
    let (deleted, released): (Vec<&OwnedNamespace>, Vec<&OwnedNamespace>) =
        namespaces.iter().partition(|ns| deletable(ns));
    Retirement {
        // A namespace already terminating needs no second delete request.
        delete: deleted
            .iter()
            .filter(|ns| !ns.terminating)
            .map(|ns| ns.name.clone())
            .collect(),
        release: released.iter().map(|ns| ns.name.clone()).collect(),
        waiting_for: deleted.iter().map(|ns| ns.name.clone()).collect(),
    }
}

/// The JSON merge patch that releases an object from the Subscription with UID
/// `subscription_uid`: its ownerReferences to it, `flotilla.dev/*` labels and annotations
/// and `app.kubernetes.io/managed-by: flotilla` removed; other owners, labels and
/// annotations kept. `None` when there is nothing to release.
///
/// A merge patch replaces lists whole, so the patch carries the remaining ownerReferences
/// and the object's `resourceVersion`: if the object changed since it was read, the API
/// server refuses the patch (409) instead of dropping someone else's new reference.
pub fn release_patch(meta: &ObjectMeta, subscription_uid: &str) -> Option<Value> {
    let mut metadata = Map::new();

    let references = meta.owner_references.as_deref().unwrap_or_default();
    if references.iter().any(|r| r.uid == subscription_uid) {
        let remaining: Vec<Value> = references
            .iter()
            .filter(|r| r.uid != subscription_uid)
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect();
        metadata.insert(
            "ownerReferences".to_owned(),
            if remaining.is_empty() {
                Value::Null
            } else {
                Value::Array(remaining)
            },
        );
    }

    let removed_labels: Map<String, Value> = meta
        .labels
        .iter()
        .flatten()
        .filter(|(key, value)| {
            key.starts_with(FLOTILLA_KEY_PREFIX)
                || (key.as_str() == labels::MANAGED_BY
                    && value.as_str() == labels::MANAGED_BY_VALUE)
        })
        .map(|(key, _)| (key.clone(), Value::Null))
        .collect();
    if !removed_labels.is_empty() {
        metadata.insert("labels".to_owned(), Value::Object(removed_labels));
    }

    let removed_annotations: Map<String, Value> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| key.starts_with(FLOTILLA_KEY_PREFIX))
        .map(|(key, _)| (key.clone(), Value::Null))
        .collect();
    if !removed_annotations.is_empty() {
        metadata.insert("annotations".to_owned(), Value::Object(removed_annotations));
    }

    if metadata.is_empty() {
        return None;
    }
    if let Some(version) = &meta.resource_version {
        metadata.insert("resourceVersion".to_owned(), Value::String(version.clone()));
    }
    Some(serde_json::json!({ "metadata": metadata }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn owned(name: &str, terminating: bool) -> OwnedNamespace {
        OwnedNamespace {
            name: name.into(),
            terminating,
            origin: Origin::Created,
        }
    }

    fn handed_over(name: &str, deletable: bool) -> OwnedNamespace {
        OwnedNamespace {
            name: name.into(),
            terminating: false,
            origin: Origin::HandedOver { deletable },
        }
    }

    #[test]
    fn a_handed_over_namespace_is_released_unless_opted_into_deletion() {
        let namespaces = [
            owned("created", false),
            handed_over("given", false),
            handed_over("opted-in", true),
        ];
        let retirement = retire(DeletionPolicy::Delete, &namespaces);
        assert_eq!(retirement.delete, ["created", "opted-in"]);
        assert_eq!(retirement.release, ["given"]);
        assert_eq!(retirement.waiting_for, ["created", "opted-in"]);
        let retirement = retire(DeletionPolicy::Retain, &namespaces);
        assert!(retirement.delete.is_empty());
        assert_eq!(retirement.release, ["created", "given", "opted-in"]);
    }

    fn reference(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "flotilla.dev/v1alpha1".into(),
            kind: "Subscription".into(),
            name: "acme".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn delete_deletes_and_waits_until_gone() {
        let retirement = retire(
            DeletionPolicy::Delete,
            &[owned("a", false), owned("b", true)],
        );
        assert_eq!(retirement.delete, ["a"], "b is already terminating");
        assert!(retirement.release.is_empty());
        assert_eq!(retirement.waiting_for, ["a", "b"]);
        assert!(!retirement.is_complete());
        let gone = retire(DeletionPolicy::Delete, &[]);
        assert!(gone.is_complete());
        assert!(gone.is_empty());
    }

    #[test]
    fn retain_releases_and_is_complete_once_released() {
        let retirement = retire(
            DeletionPolicy::Retain,
            &[owned("a", false), owned("b", true)],
        );
        assert!(retirement.delete.is_empty());
        assert_eq!(retirement.release, ["a", "b"]);
        assert!(retirement.is_complete());
        assert!(!retirement.is_empty());
    }

    #[test]
    fn release_removes_only_what_is_flotillas() {
        let meta = ObjectMeta {
            name: Some("acme".into()),
            resource_version: Some("12".into()),
            labels: Some(BTreeMap::from([
                ("flotilla.dev/subscription".into(), "acme".into()),
                ("flotilla.dev/plan".into(), "team".into()),
                ("app.kubernetes.io/managed-by".into(), "flotilla".into()),
                ("team".into(), "payments".into()),
            ])),
            annotations: Some(BTreeMap::from([
                ("flotilla.dev/read-only".into(), "true".into()),
                ("kubernetes.io/description".into(), "kept".into()),
            ])),
            owner_references: Some(vec![reference("ours", true), reference("other", false)]),
            ..ObjectMeta::default()
        };
        let patch = release_patch(&meta, "ours").unwrap();
        assert_eq!(
            patch,
            serde_json::json!({
                "metadata": {
                    "ownerReferences": [{
                        "apiVersion": "flotilla.dev/v1alpha1",
                        "kind": "Subscription",
                        "name": "acme",
                        "uid": "other",
                        "controller": false,
                        "blockOwnerDeletion": true,
                    }],
                    "labels": {
                        "app.kubernetes.io/managed-by": null,
                        "flotilla.dev/plan": null,
                        "flotilla.dev/subscription": null,
                    },
                    "annotations": {"flotilla.dev/read-only": null},
                    "resourceVersion": "12",
                }
            })
        );
    }

    #[test]
    fn the_last_owner_reference_is_removed_with_null() {
        let meta = ObjectMeta {
            owner_references: Some(vec![reference("ours", true)]),
            ..ObjectMeta::default()
        };
        let patch = release_patch(&meta, "ours").unwrap();
        assert_eq!(
            patch,
            serde_json::json!({"metadata": {"ownerReferences": null}})
        );
    }

    #[test]
    fn managed_by_someone_else_is_kept_and_released_objects_need_nothing() {
        let meta = ObjectMeta {
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".into(),
                "helm".into(),
            )])),
            owner_references: Some(vec![reference("other", true)]),
            resource_version: Some("3".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(release_patch(&meta, "ours"), None);
    }
}
