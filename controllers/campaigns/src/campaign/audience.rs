//! Who a campaign is for: the Subscriptions its audience matches (label selector, plans,
//! phases), read from a compact view of each Subscription so that 100,000 of them stay cheap
//! to hold and to scan once when a campaign starts or its preview is refreshed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use flotilla_crds::Subscription;
use flotilla_runtime::index::SharedIndex;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::index::SubscriptionsByPhase;
use flotilla_crds::campaign::Audience;
use flotilla_crds::subscription::SubscriptionPhase;
use jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

/// The Subscription cache as campaigns read it: the objects, a counter every watch event
/// bumps, and the Subscriptions by phase.
#[derive(Clone)]
pub struct SubscriptionCache {
    /// Subscriptions now (trimmed).
    pub store: Store<Subscription>,
    /// Bumped by every Subscription watch event: a trigger campaign rescans only after one.
    pub changes: Arc<AtomicU64>,
    /// Which Subscriptions are in each phase.
    pub by_phase: SharedIndex<SubscriptionsByPhase>,
}

impl SubscriptionCache {
    /// The Subscriptions in `phase` now.
    pub fn in_phase(&self, phase: SubscriptionPhase) -> Vec<Arc<Subscription>> {
        let names = self.by_phase.lock().subscriptions(phase);
        names
            .iter()
            .filter_map(|name| self.store.get(&ObjectRef::new(name)))
            .collect()
    }
}

/// A Subscription as a campaign reads it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SubscriptionView {
    /// `metadata.name` (Subscriptions are cluster-scoped).
    pub name: Arc<str>,
    /// `metadata.uid`: a message id is derived from it, so a Subscription deleted and created
    /// again under the same name is a new recipient.
    pub uid: Arc<str>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.plan`.
    pub plan: Arc<str>,
    /// `status.phase`, once the Subscription controller has set it.
    pub phase: Option<SubscriptionPhase>,
    /// `status.trialEndsAt`.
    pub trial_ends_at: Option<Timestamp>,
    /// `status.namespaces`, else `spec.namespaces`.
    pub namespaces: Vec<String>,
    /// `spec.contact.name`.
    pub contact_name: Option<String>,
    /// `spec.contact.email`.
    pub email: Option<String>,
    /// `spec.contact.timeZone`.
    pub time_zone: Option<String>,
    /// `spec.contact.optedOut`.
    pub opted_out: bool,
}

impl SubscriptionView {
    /// The view a message needs (opt-out, template fields): [`Self::of`] without the labels,
    /// which only audience selection reads, so a send copies no label map.
    pub fn for_message(subscription: &Subscription) -> Self {
        Self::with_labels(subscription, BTreeMap::new())
    }

    /// The view of `subscription`.
    pub fn of(subscription: &Subscription) -> Self {
        let labels = subscription.metadata.labels.clone().unwrap_or_default();
        Self::with_labels(subscription, labels)
    }

    fn with_labels(subscription: &Subscription, labels: BTreeMap<String, String>) -> Self {
        let meta = &subscription.metadata;
        let spec = &subscription.spec;
        let status = subscription.status.as_ref();
        let contact = spec.contact.clone().unwrap_or_default();
        let namespaces = status
            .map(|s| s.namespaces.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| spec.namespaces.clone());
        Self {
            name: meta.name.as_deref().unwrap_or_default().into(),
            uid: meta.uid.as_deref().unwrap_or_default().into(),
            labels,
            plan: spec.plan.as_str().into(),
            phase: status.and_then(|s| s.phase),
            trial_ends_at: status.and_then(|s| s.trial_ends_at.as_ref()).map(|t| t.0),
            namespaces,
            contact_name: contact.name,
            email: contact.email,
            time_zone: contact.time_zone,
            opted_out: contact.opted_out,
        }
    }
}

/// Why an audience cannot be evaluated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AudienceError {
    /// The label selector does not parse.
    #[error("spec.audience.selector: {0}")]
    Selector(String),
}

/// An audience, ready to test Subscriptions against.
#[derive(Debug)]
pub struct AudienceFilter {
    selector: Option<Selector>,
    plans: Vec<String>,
    phases: Vec<SubscriptionPhase>,
}

impl AudienceFilter {
    /// The filter of `audience`.
    pub fn new(audience: &Audience) -> Result<Self, AudienceError> {
        let selector = audience
            .selector
            .clone()
            .map(Selector::try_from)
            .transpose()
            .map_err(|e| AudienceError::Selector(e.to_string()))?;
        Ok(Self {
            selector,
            plans: audience.plans.clone(),
            phases: audience.effective_phases(),
        })
    }

    /// Whether `subscription` is in the audience. A Subscription whose phase is not known yet
    /// is not: its controller has not looked at it.
    pub fn matches(&self, subscription: &SubscriptionView) -> bool {
        subscription
            .phase
            .is_some_and(|phase| self.phases.contains(&phase))
            && (self.plans.is_empty() || self.plans.iter().any(|p| **p == *subscription.plan))
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&subscription.labels))
    }

    /// The members of the audience among `subscriptions`, by name: the campaign's order, the
    /// same whatever order the cache lists them in.
    pub fn select<'a>(
        &self,
        subscriptions: impl IntoIterator<Item = &'a SubscriptionView>,
    ) -> Vec<&'a SubscriptionView> {
        let mut members: Vec<_> = subscriptions
            .into_iter()
            .filter(|s| self.matches(s))
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(
        name: &str,
        plan: &str,
        phase: SubscriptionPhase,
        labels: &[(&str, &str)],
    ) -> SubscriptionView {
        SubscriptionView {
            name: name.into(),
            uid: format!("uid-{name}").into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            plan: plan.into(),
            phase: Some(phase),
            ..SubscriptionView::default()
        }
    }

    fn audience(value: serde_json::Value) -> Audience {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_default_phases_are_the_live_ones() {
        let filter = AudienceFilter::new(&audience(json!({}))).unwrap();
        assert!(filter.matches(&view("a", "pro", SubscriptionPhase::Trialing, &[])));
        assert!(filter.matches(&view("a", "pro", SubscriptionPhase::PastDue, &[])));
        assert!(!filter.matches(&view("a", "pro", SubscriptionPhase::Cancelled, &[])));
        let unknown = SubscriptionView {
            phase: None,
            ..view("a", "pro", SubscriptionPhase::Active, &[])
        };
        assert!(!filter.matches(&unknown));
    }

    #[test]
    fn selector_plans_and_phases_all_have_to_match() {
        let filter = AudienceFilter::new(&audience(json!({
            "selector": {"matchLabels": {"region": "eu"}},
            "plans": ["pro", "team"],
            "phases": ["Active"],
        })))
        .unwrap();
        let eu = [("region", "eu")];
        assert!(filter.matches(&view("a", "pro", SubscriptionPhase::Active, &eu)));
        assert!(!filter.matches(&view("a", "free", SubscriptionPhase::Active, &eu)));
        assert!(!filter.matches(&view("a", "pro", SubscriptionPhase::Trialing, &eu)));
        assert!(!filter.matches(&view(
            "a",
            "pro",
            SubscriptionPhase::Active,
            &[("region", "us")]
        )));
    }

    #[test]
    fn members_come_in_name_order_whatever_the_cache_order() {
        let filter = AudienceFilter::new(&audience(json!({}))).unwrap();
        let all = [
            view("c", "pro", SubscriptionPhase::Active, &[]),
            view("a", "pro", SubscriptionPhase::Active, &[]),
            view("b", "pro", SubscriptionPhase::Cancelled, &[]),
        ];
        let names: Vec<_> = filter
            .select(&all)
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn a_bad_selector_is_an_error_naming_the_field() {
        let bad = audience(json!({"selector": {"matchExpressions": [
            {"key": "region", "operator": "In"}
        ]}}));
        let error = AudienceFilter::new(&bad).unwrap_err();
        assert!(
            error.to_string().starts_with("spec.audience.selector"),
            "{error}"
        );
    }

    #[test]
    fn the_view_reads_contact_and_status() {
        let subscription: Subscription = serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
            "metadata": {"name": "acme", "uid": "u-1", "labels": {"tier": "gold"}},
            "spec": {"plan": "pro", "owners": [{"kind": "User", "name": "ada"}],
                     "contact": {"name": "Ada", "email": "ada@acme.example",
                                 "timeZone": "Europe/Berlin", "optedOut": true}},
            "status": {"phase": "Trialing", "trialEndsAt": "2026-12-24T00:00:00Z",
                       "namespaces": ["acme"]},
        }))
        .unwrap();
        let view = SubscriptionView::of(&subscription);
        assert_eq!(&*view.uid, "u-1");
        assert_eq!(view.email.as_deref(), Some("ada@acme.example"));
        assert_eq!(view.time_zone.as_deref(), Some("Europe/Berlin"));
        assert!(view.opted_out);
        assert_eq!(view.phase, Some(SubscriptionPhase::Trialing));
        assert_eq!(
            view.trial_ends_at,
            Some("2026-12-24T00:00:00Z".parse().unwrap())
        );
        assert_eq!(view.namespaces, ["acme"]);
    }
}
