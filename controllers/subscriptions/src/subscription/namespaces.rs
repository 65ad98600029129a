//! Which namespaces make up a Subscription's tenant, and whether the Subscription may use them.
//!
//! A namespace is the Subscription's when Flotilla created it for it or a cluster admin handed
//! it over: it carries the `flotilla.dev/subscription` label with the Subscription's name, or a
//! controller ownerReference to the Subscription's UID. Any other existing namespace — another
//! Subscription's, one controlled by some other object, or one Flotilla never managed (such as
//! `default` or `kube-system`) — is refused with a condition and never taken over.

use std::collections::BTreeMap;
use std::fmt;

use flotilla_crds::common::labels;
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
    /// The Subscription's own: controlled by its UID, or labelled with its name and
    /// controlled by nothing else.
    Ours,
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
/// The controller ownerReference is the stronger signal (it names a UID, so it survives a
/// Subscription being re-created under the same name); the label is how an admin hands an
/// existing namespace over (`kubectl label ns NAME flotilla.dev/subscription=SUBSCRIPTION`).
pub fn ownership(namespace: &Namespace, subscription: &str, uid: &str) -> Ownership {
    let meta = &namespace.metadata;
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    if let Some(controller) = controller {
        if !uid.is_empty() && controller.uid == uid {
            return Ownership::Ours;
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
        Some(value) if *value == label_value(subscription) => Ownership::Ours,
        Some(value) if !value.is_empty() => Ownership::OtherSubscription {
            name: value.clone(),
        },
        _ => Ownership::Unmanaged,
    }
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
    /// Who it belongs to (never [`Ownership::Ours`]).
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
            Ownership::Unmanaged | Ownership::Ours => write!(
                f,
                "namespace {namespace} exists and is not managed by Flotilla (label it {}=<subscription> to hand it over)",
                labels::SUBSCRIPTION
            ),
        }
    }
}

/// An existing namespace that is the Subscription's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnedNamespace {
    /// Its name.
    pub name: String,
    /// Whether it is being deleted.
    pub terminating: bool,
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
    /// Every existing namespace that is the Subscription's, desired or not, sorted by name.
    pub owned: Vec<OwnedNamespace>,
    /// The owned namespaces the spec no longer asks for, sorted by name.
    pub orphaned: Vec<OwnedNamespace>,
}

impl NamespaceClaims {
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
                Ownership::Ours if is_terminating(namespace) => {
                    claims.terminating.push(name.clone());
                }
                Ownership::Ours => claims.usable.push(name.clone()),
                holder => claims.conflicts.push(NamespaceConflict {
                    namespace: name.clone(),
                    holder,
                }),
            },
        }
    }
    for (name, namespace) in &by_name {
        if ownership(namespace, subscription, uid) == Ownership::Ours {
            let owned = OwnedNamespace {
                name: (*name).to_owned(),
                terminating: is_terminating(namespace),
            };
            if !desired.contains(name) {
                claims.orphaned.push(owned.clone());
            }
            claims.owned.push(owned);
        }
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
        assert_eq!(ownership(&ours, "acme", UID), Ownership::Ours);
        let by_uid = controlled_by(
            namespace("a", None),
            "flotilla.dev/v1alpha1",
            "Subscription",
            "acme",
            UID,
        );
        assert_eq!(ownership(&by_uid, "acme", UID), Ownership::Ours);

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
        assert_eq!(ownership(&ns, &name, UID), Ownership::Ours);
    }

    #[test]
    fn claims_sort_desired_and_observed_namespaces() {
        let sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "namespaces": ["new", "mine", "theirs", "kube-system", "leaving"]}),
        );
        let tenant = TenantNamespaces::resolve(&sub).unwrap();
        let observed = [
            namespace("mine", Some("acme")),
            namespace("theirs", Some("globex")),
            namespace("kube-system", None),
            terminating(namespace("leaving", Some("acme"))),
            namespace("old", Some("acme")),
            namespace("unrelated", Some("globex")),
            namespace("mine", Some("acme")),
        ];
        let claims = claim(&tenant, &observed, "acme", UID);
        assert_eq!(claims.usable, ["new", "mine"]);
        assert_eq!(claims.terminating, ["leaving"]);
        assert_eq!(
            claims
                .conflicts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "namespace theirs belongs to Subscription globex",
                "namespace kube-system exists and is not managed by Flotilla (label it flotilla.dev/subscription=<subscription> to hand it over)",
            ]
        );
        let owned: Vec<_> = claims
            .owned
            .iter()
            .map(|o| (o.name.as_str(), o.terminating))
            .collect();
        assert_eq!(owned, [("leaving", true), ("mine", false), ("old", false)]);
        assert_eq!(
            claims.orphaned,
            [OwnedNamespace {
                name: "old".into(),
                terminating: false
            }]
        );
        assert!(!claims.is_clear());
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
            &[namespace("a", Some("acme"))],
            "acme",
            UID,
        );
        assert!(claims.usable.is_empty());
        assert_eq!(claims.owned.len(), 1);
        assert_eq!(claims.orphaned.len(), 1);
        assert!(claims.is_clear());
    }
}
