//! Kubernetes Events about Flotilla objects.
//!
//! Events are for people running `kubectl describe`: controllers publish them when something
//! changes (a phase transition, a blocked deletion, a permanent failure), never on every
//! reconcile. Publishing is best effort: a failure is logged and never fails the reconcile,
//! because the status already carries the same information.
//!
//! [`Recorder`] writes `events.k8s.io/v1` Events as kube-runtime's recorder does (the same
//! names, fields and series: an Event repeated within six minutes is counted on the first
//! instead of created again), with a cache that costs O(1) per Event: kube-runtime's scans its
//! whole cache on every publish, which at 50,000 Subscriptions was a fifth of the operator's
//! CPU, and keeps whole Events where a name and a count do.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client, Resource};

/// How long a published Event is remembered for counting repeats (kube-runtime's and
/// client-go's figure).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// Publishes Events for one reporting controller (see the module docs).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    recent: Arc<Mutex<Recent>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

/// The Events published within the series window, by what makes two Events the same (type,
/// action, reason, regarding and related object): the name and count of each, and the order
/// they were last published in, so expired entries leave from the front.
#[derive(Debug, Default)]
struct Recent {
    events: HashMap<u64, Published>,
    order: VecDeque<(Timestamp, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Published {
    namespace: Option<String>,
    name: String,
    count: i32,
    last: Timestamp,
}

impl Recent {
    /// Forgets what was last published before `now` − the window.
    fn expire(&mut self, now: Timestamp) {
        while let Some(&(at, key)) = self.order.front() {
            if at + SERIES_WINDOW > now {
                break;
            }
            self.order.pop_front();
            // A later publish of the same Event left a newer entry in `order`.
            if self.events.get(&key).is_some_and(|p| p.last == at) {
                self.events.remove(&key);
            }
        }
    }

    fn record(&mut self, key: u64, published: Published) {
        self.order.push_back((published.last, key));
        self.events.insert(key, published);
    }
}

impl Recorder {
    /// A recorder for `reporter`'s Events.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            recent: Arc::default(),
        }
    }

    /// Publishes `event` about `regarding`: creates it, or counts it on the same Event
    /// published within the last six minutes. Cluster-scoped objects get their Events in
    /// `default`.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        self.publish_at(event, regarding, Timestamp::now()).await
    }

    async fn publish_at(
        &self,
        event: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let key = self.key(event, regarding);
        let repeated = {
            let mut recent = self.lock();
            recent.expire(now);
            recent.events.get(&key).cloned()
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let published = match repeated {
            Some(previous) => {
                let count = previous.count + 1;
                let series = serde_json::json!({
                    "series": EventSeries {
                        count,
                        last_observed_time: MicroTime(now),
                    },
                });
                api.patch(
                    &previous.name,
                    &PatchParams::default(),
                    &Patch::Merge(&series),
                )
                .await?;
                Published {
                    count,
                    last: now,
                    ..previous
                }
            }
            None => {
                let created = self.event(event, regarding, now);
                api.create(&PostParams::default(), &created).await?;
                Published {
                    namespace: regarding.namespace.clone(),
                    name: created.metadata.name.unwrap_or_default(),
                    count: 1,
                    last: now,
                }
            }
        };
        self.lock().record(key, published);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What makes two Events the same (kube-runtime's key), hashed.
    fn key(&self, event: &Event, regarding: &ObjectReference) -> u64 {
        let reference = |r: &ObjectReference| {
            (
                r.api_version.clone(),
                r.kind.clone(),
                r.namespace.clone(),
                r.name.clone(),
                r.uid.clone(),
                r.field_path.clone(),
            )
        };
        let mut hasher = DefaultHasher::new();
        (
            matches!(event.type_, EventType::Warning),
            &event.action,
            &event.reason,
            &self.reporter.controller,
            &self.reporter.instance,
            reference(regarding),
            event.secondary.as_ref().map(reference),
        )
            .hash(&mut hasher);
        hasher.finish()
    }

    /// The Event object kube-runtime's recorder would create.
    fn event(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_ref().unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            related: event.secondary.clone(),
            ..K8sEvent::default()
        }
    }
}

/// An Event a reconcile decided to publish: what every controller's pure status code returns,
/// so that which Events a change deserves is tested without an API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Normal or Warning.
    pub type_: EventType,
    /// UpperCamelCase reason.
    pub reason: &'static str,
    /// The human-readable note.
    pub note: String,
}

impl Planned {
    /// A Normal Event.
    pub fn normal(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Normal,
            reason,
            note: note.into(),
        }
    }

    /// A Warning Event.
    pub fn warning(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Warning,
            reason,
            note: note.into(),
        }
    }

    /// Publishes it about `object` (see [`publish`]).
    pub async fn publish<K>(self, recorder: &Recorder, object: &K, action: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        publish(recorder, object, self.type_, self.reason, action, self.note).await;
    }
}

/// Most bytes in an Event note (the API server's limit is 1 kB).
const MAX_NOTE_BYTES: usize = 1024;

/// Publishes an Event about `object` (best effort; see the module docs). The request is sent
/// in the background: a reconcile does not wait a round trip per Event, and the Event's time
/// is taken now, so Events published one after the other keep their order.
pub async fn publish<K>(
    recorder: &Recorder,
    object: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: impl Into<String>,
) where
    K: Resource<DynamicType = ()>,
{
    let reference = object.object_ref(&());
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note.into(), MAX_NOTE_BYTES)),
        action: action.to_owned(),
        secondary: None,
    };
    let recorder = recorder.clone();
    let now = Timestamp::now();
    let reason = reason.to_owned();
    tokio::spawn(async move {
        if let Err(error) = recorder.publish_at(&event, &reference, now).await {
            tracing::warn!(%error, reason, "could not publish Event");
        }
    });
}

/// Renders names as a bounded, human list: `a, b, c and 4 more`. Events and condition messages
/// name the objects involved without growing with their number.
pub fn bounded_list(names: &[String], max: usize) -> String {
    let shown = names.len().min(max);
    bounded_count(&names[..shown], names.len())
}

/// Like [`bounded_list`], from the names to show and the total count of names (for callers
/// that only hold the first few).
pub fn bounded_count(shown: &[String], total: usize) -> String {
    let mut text = shown.join(", ");
    if total > shown.len() {
        text.push_str(&format!(" and {} more", total - shown.len()));
    }
    text
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("s{i}")).collect()
    }

    fn published(name: &str, last: Timestamp) -> Published {
        Published {
            namespace: None,
            name: name.to_owned(),
            count: 1,
            last,
        }
    }

    #[test]
    fn recent_events_expire_after_the_window_oldest_first() {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().expect("time");
        let mut recent = Recent::default();
        recent.record(1, published("a", t0));
        recent.record(2, published("b", t0 + SignedDuration::from_mins(2)));
        // `a` again, later: its first entry in the order must not expire the newer one.
        recent.record(1, published("a", t0 + SignedDuration::from_mins(4)));
        recent.expire(t0 + SignedDuration::from_mins(7));
        assert_eq!(
            recent.events.len(),
            2,
            "b (2 min) and a (4 min) are within 6 minutes"
        );
        recent.expire(t0 + SignedDuration::from_mins(8));
        assert!(!recent.events.contains_key(&2));
        assert!(recent.events.contains_key(&1));
        recent.expire(t0 + SignedDuration::from_mins(10));
        assert!(recent.events.is_empty());
        assert!(recent.order.is_empty());
    }

    #[tokio::test]
    async fn events_are_the_same_by_type_action_reason_and_object() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        crate::crypto::use_ring();
        let client = kube::Client::try_from(config).expect("client");
        let reporter = Reporter {
            controller: "flotilla".to_owned(),
            instance: None,
        };
        let recorder = Recorder::new(client, reporter);
        let event = |reason: &str, note: &str| Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        let acme = ObjectReference {
            kind: Some("Subscription".into()),
            name: Some("acme".into()),
            ..ObjectReference::default()
        };
        let globex = ObjectReference {
            name: Some("globex".into()),
            ..acme.clone()
        };
        let key = |e: &Event, r: &ObjectReference| recorder.key(e, r);
        assert_eq!(
            key(&event("Activated", "x"), &acme),
            key(&event("Activated", "y"), &acme)
        );
        assert_ne!(
            key(&event("Activated", "x"), &acme),
            key(&event("Suspended", "x"), &acme)
        );
        assert_ne!(
            key(&event("Activated", "x"), &acme),
            key(&event("Activated", "x"), &globex)
        );
        let built = recorder.event(&event("Activated", "x"), &acme, Timestamp::UNIX_EPOCH);
        assert_eq!(built.metadata.name.as_deref(), Some("acme.0"));
        assert_eq!(built.reporting_instance.as_deref(), Some("flotilla"));
        assert_eq!(built.type_.as_deref(), Some("Normal"));
    }

    #[test]
    fn short_lists_are_complete() {
        assert_eq!(bounded_list(&names(0), 3), "");
        assert_eq!(bounded_list(&names(3), 3), "s1, s2, s3");
    }

    #[test]
    fn long_lists_say_how_many_are_left_out() {
        assert_eq!(bounded_list(&names(7), 3), "s1, s2, s3 and 4 more");
        assert_eq!(bounded_count(&names(2), 9), "s1, s2 and 7 more");
    }

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let cut = truncate(long, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".into(), MAX_NOTE_BYTES), "short");
    }
}
