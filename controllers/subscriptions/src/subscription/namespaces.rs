//! Which namespaces make up a Subscription's tenant, and whether the Subscription may use them.
//!
//! | An existing namespace | How it is recognised | May be used | On cancel / leaving the spec |
//! |---|---|---|---|
//! | created by Flotilla | controller ownerReference to the Subscription's UID, set at creation | yes | `deletionPolicy` (deleted or released) |
//! | handed over | label `flotilla.dev/subscription=<name>`, no controller | when the spec lists it | released; deleted only with `flotilla.dev/allow-deletion: "true"` and `Delete` |
//! | anything else | another Subscription's, another controller's, or unmanaged | never (a conflict) | untouched |
//!
//! A label is a request, never proof of ownership: a namespace labelled for a Subscription that
//! does not list it is left alone, and a handed-over namespace never gets an ownerReference (so
//! the garbage collector cannot delete it either).

use std::collections::BTreeMap;
use std::fmt;

use flotilla_crds::common::{annotations, labels};
use flotilla_crds::{SpecError, Subscription};
use k8s_openapi::api::core::v1::Namespace;

use super::build::label_value;

/// The tenant namespaces a valid Subscription asks for, in the order of its spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantNamespaces {
    names: Vec<String>,
}

impl TenantNamespaces {
    /// The namespaces of `subscription`: `spec.namespaces`, or one namespace named after the
    /// Subscription when that list is empty.
    ///
    /// Refuses the whole spec when any part of it is invalid (`Subscription::validate`: names
    /// that are not DNS-1123 labels, a namespace listed twice, an invalid default name, but
    /// also duplicate owners or an unknown time zone), because a Subscription is provisioned
    /// from a valid spec or not at all.
    pub fn resolve(subscription: &Subscription) -> Result<Self, Vec<SpecError>> {
        subscription.validate()?;
        Ok(Self {
            names: subscription.desired_namespaces(),
        })
    }

    /// No namespaces: what to claim against when the spec is invalid, so that the
    /// Subscription's existing namespaces are still found (for cancellation).
    pub fn none() -> Self {
        Self { names: Vec::new() }
    }

    /// The namespace names, in spec order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether `name` is one of the tenant namespaces.
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

/// Who an existing namespace belongs to, as far as a given Subscription is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Created by Flotilla for the Subscription: its controller ownerReference names the
    /// Subscription's UID. The only namespaces `deletionPolicy: Delete` deletes unasked.
    Created,
    /// Handed over by an admin: labelled with the Subscription's name and controlled by
    /// nothing. Flotilla keeps it in shape while the spec lists it, and only releases it.
    HandedOver,
    /// Claimed by another Subscription (by label or controller ownerReference).
    OtherSubscription {
        /// That Subscription's name (as recorded on the namespace).
        name: String,
    },
    /// Controlled by some other object.
    OtherController {
        /// The controller's kind.
        kind: String,
        /// The controller's name.
        name: String,
    },
    /// Exists without any Flotilla claim (created by someone else).
    Unmanaged,
}

/// Decides who `namespace` belongs to from the point of view of the Subscription named
/// `subscription` with UID `uid`.
///
/// The controller ownerReference decides first (it names a UID, so a Subscription re-created
/// under the same name does not inherit its predecessor's namespaces); the label is how an
/// admin hands an existing namespace over (`kubectl label ns NAME flotilla.dev/subscription=SUBSCRIPTION`).
pub fn ownership(namespace: &Namespace, subscription: &str, uid: &str) -> Ownership {
    let meta = &namespace.metadata;
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    if let Some(controller) = controller {
        if !uid.is_empty() && controller.uid == uid {
            return Ownership::Created;
        }
        return if controller.kind == "Subscription"
            && controller.api_version.starts_with("flotilla.dev/")
        {
            Ownership::OtherSubscription {
                name: controller.name.clone(),
            }
        } else {
            Ownership::OtherController {
                kind: controller.kind.clone(),
                name: controller.name.clone(),
            }
        };
    }
    match meta
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::SUBSCRIPTION))
    {
        Some(value) if *value == label_value(subscription) => Ownership::HandedOver,
        Some(value) if !value.is_empty() => Ownership::OtherSubscription {
            name: value.clone(),
        },
        _ => Ownership::Unmanaged,
    }
}

/// Whether Flotilla may use `namespace` for the Subscription (created or handed over).
pub fn is_ours(ownership: &Ownership) -> bool {
    matches!(ownership, Ownership::Created | Ownership::HandedOver)
}

/// Whether Flotilla has provisioned a handed-over namespace (its apply sets the managed-by
/// label): then it has Flotilla's children to release when it leaves the spec. A namespace
/// only labelled, waiting for the spec to list it, is left alone.
fn is_provisioned(namespace: &Namespace) -> bool {
    namespace
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::MANAGED_BY))
        .is_some_and(|value| value == labels::MANAGED_BY_VALUE)
}

/// Whether a handed-over namespace's owner opted it into deletion
/// ([`annotations::ALLOW_DELETION`] is `"true"`).
fn allows_deletion(namespace: &Namespace) -> bool {
    namespace
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::ALLOW_DELETION))
        .is_some_and(|value| value == "true")
}

/// Whether `namespace` is being deleted.
pub fn is_terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Terminating")
}

/// A desired namespace that belongs to something else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceConflict {
    /// The namespace.
    pub namespace: String,
    /// Who it belongs to (never [`Ownership::Created`] or [`Ownership::HandedOver`]).
    pub holder: Ownership,
}

impl fmt::Display for NamespaceConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let namespace = &self.namespace;
        match &self.holder {
            Ownership::OtherSubscription { name } => {
                write!(f, "namespace {namespace} belongs to Subscription {name}")
            }
            Ownership::OtherController { kind, name } => {
                write!(f, "namespace {namespace} is controlled by {kind} {name}")
            }
            Ownership::Unmanaged | Ownership::Created | Ownership::HandedOver => write!(
                f,
                "namespace {namespace} exists and is not managed by Flotilla (label it {}=<subscription> to hand it over; a handed-over namespace is released, never deleted, when the Subscription lets go of it)",
                labels::SUBSCRIPTION
            ),
        }
    }
}

/// How a namespace came to be the Subscription's, and so what letting go of it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Flotilla created it: `deletionPolicy` applies.
    Created,
    /// An admin handed it over: released, or deleted only if `deletable`.
    HandedOver {
        /// Carries `flotilla.dev/allow-deletion: "true"`.
        deletable: bool,
    },
}

/// An existing namespace that is the Subscription's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnedNamespace {
    /// Its name.
    pub name: String,
    /// Whether it is being deleted.
    pub terminating: bool,
    /// Created or handed over.
    pub origin: Origin,
}

/// The tenant namespaces sorted by what the Subscription may do with them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceClaims {
    /// Desired namespaces the Subscription may provision now: absent (to be created) or its
    /// own and not terminating. In spec order.
    pub usable: Vec<String>,
    /// Desired namespaces that are the Subscription's but still terminating (e.g. removed from
    /// the spec and added back): provisioning them waits until they are gone. In spec order.
    pub terminating: Vec<String>,
    /// Desired namespaces that belong to something else: refused, never taken over. In spec
    /// order.
    pub conflicts: Vec<NamespaceConflict>,
    /// Every existing namespace that is the Subscription's, sorted by name: created ones,
    /// and handed-over ones that the spec lists or that Flotilla has provisioned.
    pub owned: Vec<OwnedNamespace>,
    /// The owned namespaces the spec no longer asks for, sorted by name.
    pub orphaned: Vec<OwnedNamespace>,
}

impl NamespaceClaims {
    /// Whether `name` was handed over rather than created (so it is applied without an
    /// ownerReference).
    pub fn is_handed_over(&self, name: &str) -> bool {
        self.owned
            .iter()
            .any(|ns| ns.name == name && matches!(ns.origin, Origin::HandedOver { .. }))
    }

    /// Whether every desired namespace can be provisioned now.
    pub fn is_clear(&self) -> bool {
        self.conflicts.is_empty() && self.terminating.is_empty()
    }
}

/// Sorts the desired namespaces and the observed ones into [`NamespaceClaims`].
///
/// `observed` are the namespaces the shell could see: each desired namespace that exists, and
/// every namespace labelled with the Subscription's name (duplicates are fine).
pub fn claim(
    desired: &TenantNamespaces,
    observed: &[Namespace],
    subscription: &str,
    uid: &str,
) -> NamespaceClaims {
    let by_name: BTreeMap<&str, &Namespace> = observed
        .iter()
        .filter_map(|ns| ns.metadata.name.as_deref().map(|name| (name, ns)))
        .collect();

    let mut claims = NamespaceClaims::default();
    for name in desired.names() {
        match by_name.get(name.as_str()) {
            None => claims.usable.push(name.clone()),
            Some(namespace) => match ownership(namespace, subscription, uid) {
                Ownership::Created | Ownership::HandedOver if is_terminating(namespace) => {
                    claims.terminating.push(name.clone());
                }
                Ownership::Created | Ownership::HandedOver => claims.usable.push(name.clone()),
                holder => claims.conflicts.push(NamespaceConflict {
                    namespace: name.clone(),
                    holder,
                }),
            },
        }
    }
    for (name, namespace) in &by_name {
        let desired = desired.contains(name);
        let origin = match ownership(namespace, subscription, uid) {
            Ownership::Created => Origin::Created,
            Ownership::HandedOver if desired || is_provisioned(namespace) => Origin::HandedOver {
                deletable: allows_deletion(namespace),
            },
            _ => continue,
        };
        let owned = OwnedNamespace {
            name: (*name).to_owned(),
            terminating: is_terminating(namespace),
            origin,
        };
        if !desired {
            claims.orphaned.push(owned.clone());
        }
        claims.owned.push(owned);
    }
    claims
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    pub(crate) const UID: &str = "5b0c1a4e-0000-4000-8000-000000000001";

    pub(crate) fn subscription(name: &str, spec: serde_json::Value) -> Subscription {
        let mut sub = Subscription::new(name, serde_json::from_value(spec).expect("spec"));
        sub.metadata.uid = Some(UID.to_owned());
        sub
    }

    pub(crate) fn namespace(name: &str, label: Option<&str>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: label
                    .map(|l| BTreeMap::from([(labels::SUBSCRIPTION.to_owned(), l.to_owned())])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    /// A namespace as Flotilla creates it for Subscription `acme` (UID [`UID`]).
    pub(crate) fn created(name: &str) -> Namespace {
        let mut ns = controlled_by(
            namespace(name, Some("acme")),
            "flotilla.dev/v1alpha1",
            "Subscription",
            "acme",
            UID,
        );
        ns.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        ns
    }

    /// `ns` with Flotilla's apply seen on it (the managed-by label).
    fn provisioned(mut ns: Namespace) -> Namespace {
        ns.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        ns
    }

    fn allowing_deletion(mut ns: Namespace) -> Namespace {
        ns.metadata.annotations = Some(BTreeMap::from([(
            annotations::ALLOW_DELETION.to_owned(),
            "true".to_owned(),
        )]));
        ns
    }

    fn controlled_by(
        mut ns: Namespace,
        api_version: &str,
        kind: &str,
        name: &str,
        uid: &str,
    ) -> Namespace {
        ns.metadata.owner_references = Some(vec![OwnerReference {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        ns
    }

    fn terminating(mut ns: Namespace) -> Namespace {
        ns.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        ns
    }

    #[test]
    fn the_default_namespace_is_the_subscription_name() {
        let sub = subscription("acme", serde_json::json!({"plan": "team"}));
        assert_eq!(TenantNamespaces::resolve(&sub).unwrap().names(), ["acme"]);
    }

    #[test]
    fn listed_namespaces_are_kept_in_order() {
        let sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "namespaces": ["acme-prod", "acme-dev"]}),
        );
        let tenant = TenantNamespaces::resolve(&sub).unwrap();
        assert_eq!(tenant.names(), ["acme-prod", "acme-dev"]);
        assert!(tenant.contains("acme-dev"));
        assert!(!tenant.contains("acme"));
    }

    #[test]
    fn invalid_and_duplicate_namespaces_are_refused_with_their_paths() {
        let sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "namespaces": ["ok", "Not_A_Label", "ok", "-x"]}),
        );
        let errors = TenantNamespaces::resolve(&sub).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.namespaces[1]",
                "spec.namespaces[2]",
                "spec.namespaces[3]"
            ]
        );
        assert!(
            errors[1].message.contains("more than once"),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn a_name_that_cannot_be_a_namespace_needs_an_explicit_list() {
        let sub = subscription("acme.example.com", serde_json::json!({"plan": "team"}));
        let errors = TenantNamespaces::resolve(&sub).unwrap_err();
        assert_eq!(errors[0].field, "metadata.name");
        let long = "a".repeat(64);
        let sub = subscription(&long, serde_json::json!({"plan": "team"}));
        assert!(TenantNamespaces::resolve(&sub).is_err());
        let sub = subscription(
            &long,
            serde_json::json!({"plan": "team", "namespaces": ["a"]}),
        );
        assert_eq!(TenantNamespaces::resolve(&sub).unwrap().names(), ["a"]);
    }

    #[test]
    fn ownership_follows_the_controller_reference_then_the_label() {
        let ours = namespace("a", Some("acme"));
        assert_eq!(ownership(&ours, "acme", UID), Ownership::HandedOver);
        let by_uid = controlled_by(
            namespace("a", None),
            "flotilla.dev/v1alpha1",
            "Subscription",
            "acme",
            UID,
        );
        assert_eq!(ownership(&by_uid, "acme", UID), Ownership::Created);

        let other_label = namespace("a", Some("globex"));
        assert_eq!(
            ownership(&other_label, "acme", UID),
            Ownership::OtherSubscription {
                name: "globex".into()
            }
        );
        // Labelled with our name but controlled by an earlier Subscription of the same name:
        // the UID decides, and it is not ours.
        let stale = controlled_by(
            namespace("a", Some("acme")),
            "flotilla.dev/v1alpha1",
            "Subscription",
            "acme",
            "old-uid",
        );
        assert_eq!(
            ownership(&stale, "acme", UID),
            Ownership::OtherSubscription {
                name: "acme".into()
            }
        );
        let foreign = controlled_by(
            namespace("a", Some("acme")),
            "example.com/v1",
            "Tenant",
            "t1",
            "x",
        );
        assert_eq!(
            ownership(&foreign, "acme", UID),
            Ownership::OtherController {
                kind: "Tenant".into(),
                name: "t1".into()
            }
        );
        assert_eq!(
            ownership(&namespace("default", None), "acme", UID),
            Ownership::Unmanaged
        );
        // Without a UID (an object never stored) no controller reference can be recognised as ours.
        assert_eq!(
            ownership(&by_uid, "acme", ""),
            Ownership::OtherSubscription {
                name: "acme".into()
            }
        );
    }

    #[test]
    fn long_subscription_names_are_matched_through_their_label_value() {
        let name = format!("{}.example.com", "tenant".repeat(12));
        let ns = namespace("a", Some(&label_value(&name)));
        assert_eq!(ownership(&ns, &name, UID), Ownership::HandedOver);
    }

    #[test]
    fn claims_sort_desired_and_observed_namespaces() {
        let sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "namespaces": ["new", "mine", "given", "theirs", "kube-system", "leaving"]}),
        );
        let tenant = TenantNamespaces::resolve(&sub).unwrap();
        let observed = [
            created("mine"),
            namespace("given", Some("acme")),
            namespace("theirs", Some("globex")),
            namespace("kube-system", None),
            terminating(created("leaving")),
            created("old"),
            provisioned(namespace("returned", Some("acme"))),
            namespace("unrelated", Some("globex")),
            created("mine"),
        ];
        let claims = claim(&tenant, &observed, "acme", UID);
        assert_eq!(claims.usable, ["new", "mine", "given"]);
        assert_eq!(claims.terminating, ["leaving"]);
        assert_eq!(
            claims
                .conflicts
                .iter()
                .map(|c| c
                    .to_string()
                    .split(" (")
                    .next()
                    .unwrap_or_default()
                    .to_owned())
                .collect::<Vec<_>>(),
            [
                "namespace theirs belongs to Subscription globex",
                "namespace kube-system exists and is not managed by Flotilla",
            ]
        );
        assert!(
            claims.conflicts[1]
                .to_string()
                .contains("label it flotilla.dev/subscription=<subscription> to hand it over")
        );
        let owned: Vec<_> = claims
            .owned
            .iter()
            .map(|o| (o.name.as_str(), o.terminating, o.origin))
            .collect();
        let handed_over = Origin::HandedOver { deletable: false };
        assert_eq!(
            owned,
            [
                ("given", false, handed_over),
                ("leaving", true, Origin::Created),
                ("mine", false, Origin::Created),
                ("old", false, Origin::Created),
                ("returned", false, handed_over),
            ]
        );
        let orphaned: Vec<_> = claims.orphaned.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(orphaned, ["old", "returned"]);
        assert!(claims.is_handed_over("given"));
        assert!(!claims.is_handed_over("mine"));
        assert!(!claims.is_clear());
    }

    /// The data-loss case: labelling a namespace asks for a handover; it proves nothing. A
    /// labelled namespace the spec does not list is not the Subscription's at all, so it can
    /// be neither an orphan to retire nor a target for workload scaling.
    #[test]
    fn a_label_alone_makes_nothing_ours() {
        let sub = subscription("acme", serde_json::json!({"plan": "team"}));
        let tenant = TenantNamespaces::resolve(&sub).unwrap();
        let observed = [
            created("acme"),
            namespace("precious", Some("acme")),
            allowing_deletion(namespace("kube-system", Some("acme"))),
        ];
        let claims = claim(&tenant, &observed, "acme", UID);
        let owned: Vec<_> = claims.owned.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(owned, ["acme"]);
        assert!(claims.orphaned.is_empty());
    }

    #[test]
    fn a_handed_over_namespace_is_deletable_only_when_annotated() {
        let sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "namespaces": ["a", "b"]}),
        );
        let tenant = TenantNamespaces::resolve(&sub).unwrap();
        let observed = [
            namespace("a", Some("acme")),
            allowing_deletion(namespace("b", Some("acme"))),
        ];
        let claims = claim(&tenant, &observed, "acme", UID);
        let origins: Vec<_> = claims.owned.iter().map(|o| o.origin).collect();
        assert_eq!(
            origins,
            [
                Origin::HandedOver { deletable: false },
                Origin::HandedOver { deletable: true }
            ]
        );
    }

    #[test]
    fn a_terminating_namespace_is_recognised_by_its_phase_too() {
        let mut ns = namespace("a", Some("acme"));
        assert!(!is_terminating(&ns));
        ns.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..NamespaceStatus::default()
        });
        assert!(is_terminating(&ns));
    }

    #[test]
    fn an_invalid_spec_still_finds_the_owned_namespaces() {
        let claims = claim(
            &TenantNamespaces::none(),
            &[created("a"), namespace("b", Some("acme"))],
            "acme",
            UID,
        );
        assert!(claims.usable.is_empty());
        assert_eq!(claims.owned.len(), 1);
        assert_eq!(claims.orphaned.len(), 1);
        assert!(claims.is_clear());
    }
}
