//! Reconciling an object again at a moment in time (a trial's end, a grace period's end), by
//! the operator's [`Clock`].
//!
//! kube-runtime's `Action::requeue(duration)` counts real time, which a test cannot move: a
//! `ManualClock` advanced by fourteen days would still leave the requeue fourteen real days
//! away. So time-driven reconciles go through [`Wakeups`] instead: each reconcile records when
//! its object is next due ([`Wakeups::schedule`], replacing the previous entry), and
//! [`Wakeups::due`] is a stream of the objects whose moment has come, handed to the
//! `Controller` with `reconcile_on`. It waits through [`Clock::sleep_until`]: on the real wall
//! clock in production, and until a test moves the clock in tests — the controller runs the
//! same code either way.
//!
//! Entries live in memory only. After a restart every object is reconciled once on the first
//! list, which records its next moment again.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, stream};
use jiff::Timestamp;
use kube::runtime::reflector::{Lookup, ObjectRef};
use tokio::sync::Notify;

use super::clock::SharedClock;

/// The moments at which objects of kind `K` are due for another reconcile.
pub struct Wakeups<K: Lookup>
where
    K::DynamicType: Eq + Hash + Clone,
{
    inner: Arc<Inner<K>>,
}

struct Inner<K: Lookup>
where
    K::DynamicType: Eq + Hash + Clone,
{
    clock: SharedClock,
    due_at: Mutex<HashMap<ObjectRef<K>, Timestamp>>,
    /// Wakes the [`Wakeups::due`] stream when an entry changes (it may be earlier than the
    /// moment the stream is waiting for).
    changed: Notify,
}

impl<K: Lookup> Clone for Wakeups<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K> std::fmt::Debug for Wakeups<K>
where
    K: Lookup + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("scheduled", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K> Wakeups<K>
where
    K: Lookup + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// No wake-ups yet; time is read from `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                due_at: Mutex::new(HashMap::new()),
                changed: Notify::new(),
            }),
        }
    }

    /// Records that `object` is next due at `at`, replacing what was recorded before; `None`
    /// forgets it (nothing is due any more, or the object is gone).
    pub fn schedule(&self, object: ObjectRef<K>, at: Option<Timestamp>) {
        let changed = {
            let mut due_at = self.lock();
            match at {
                Some(at) => due_at.insert(object, at) != Some(at),
                None => due_at.remove(&object).is_some(),
            }
        };
        if changed {
            // A stored permit wakes the stream even if it is not waiting yet.
            self.inner.changed.notify_one();
        }
    }

    /// When `object` is next due, if it is.
    pub fn scheduled(&self, object: &ObjectRef<K>) -> Option<Timestamp> {
        self.lock().get(object).copied()
    }

    /// How many objects have a wake-up recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no object has a wake-up recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects whose moment has come, each once per recorded moment, as the clock reaches
    /// it. Meant for exactly one consumer (the controller's `reconcile_on`); it never ends.
    pub fn due(&self) -> impl Stream<Item = ObjectRef<K>> + Send + 'static {
        let state = (self.clone(), VecDeque::new());
        stream::unfold(state, |(wakeups, mut ready)| async move {
            loop {
                if let Some(object) = ready.pop_front() {
                    return Some((object, (wakeups, ready)));
                }
                let next = wakeups.take_due(&mut ready);
                if !ready.is_empty() {
                    continue;
                }
                let clock = &wakeups.inner.clock;
                tokio::select! {
                    () = wakeups.inner.changed.notified() => {}
                    () = async {
                        match next {
                            Some(at) => clock.sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
            }
        })
    }

    /// Moves every entry due now into `ready` (earliest first) and returns the earliest moment
    /// still ahead.
    fn take_due(&self, ready: &mut VecDeque<ObjectRef<K>>) -> Option<Timestamp> {
        let now = self.inner.clock.now();
        let mut due_at = self.lock();
        let mut due: Vec<(Timestamp, ObjectRef<K>)> = Vec::new();
        due_at.retain(|object, at| {
            if *at <= now {
                due.push((*at, object.clone()));
                false
            } else {
                true
            }
        });
        due.sort_by_key(|(at, _)| *at);
        ready.extend(due.into_iter().map(|(_, object)| object));
        due_at.values().min().copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Timestamp>> {
        self.inner
            .due_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use jiff::SignedDuration;
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn named(name: &str) -> ObjectRef<ConfigMap> {
        ObjectRef::new(name).within("default")
    }

    /// The next item, or `None` if nothing comes within a short real-time wait.
    async fn next_soon<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
        tokio::time::timeout(Duration::from_millis(100), stream.next())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn moving_the_clock_fires_what_is_due_in_order() {
        let clock = ManualClock::new(ts("2030-01-01T00:00:00Z"));
        let wakeups = Wakeups::new(Arc::new(clock.clone()));
        let mut due = Box::pin(wakeups.due());
        wakeups.schedule(named("trial"), Some(ts("2030-01-15T00:00:00Z")));
        wakeups.schedule(named("grace"), Some(ts("2030-01-08T00:00:00Z")));
        wakeups.schedule(named("later"), Some(ts("2030-03-01T00:00:00Z")));
        assert_eq!(next_soon(&mut due).await, None, "nothing is due yet");

        clock.advance(SignedDuration::from_hours(24 * 20));
        assert_eq!(next_soon(&mut due).await, Some(named("grace")));
        assert_eq!(next_soon(&mut due).await, Some(named("trial")));
        assert_eq!(next_soon(&mut due).await, None, "each fires once");
        assert_eq!(
            wakeups.scheduled(&named("later")),
            Some(ts("2030-03-01T00:00:00Z"))
        );
        assert_eq!(wakeups.len(), 1);
    }

    #[tokio::test]
    async fn a_new_moment_replaces_the_old_and_none_forgets() {
        let clock = ManualClock::new(ts("2030-01-01T00:00:00Z"));
        let wakeups = Wakeups::new(Arc::new(clock.clone()));
        let mut due = Box::pin(wakeups.due());
        wakeups.schedule(named("a"), Some(ts("2030-01-10T00:00:00Z")));
        wakeups.schedule(named("a"), Some(ts("2030-02-10T00:00:00Z")));
        wakeups.schedule(named("b"), Some(ts("2030-01-10T00:00:00Z")));
        wakeups.schedule(named("b"), None);
        clock.set(ts("2030-01-20T00:00:00Z"));
        assert_eq!(next_soon(&mut due).await, None);
        clock.set(ts("2030-02-10T00:00:00Z"));
        assert_eq!(next_soon(&mut due).await, Some(named("a")));
        assert!(wakeups.is_empty());
    }

    #[tokio::test]
    async fn an_entry_already_due_fires_at_once() {
        let clock = ManualClock::new(ts("2030-01-01T00:00:00Z"));
        let wakeups = Wakeups::new(Arc::new(clock.clone()));
        let mut due = Box::pin(wakeups.due());
        assert_eq!(next_soon(&mut due).await, None);
        // Scheduled while the stream waits with nothing to wait for.
        wakeups.schedule(named("now"), Some(clock.now()));
        assert_eq!(next_soon(&mut due).await, Some(named("now")));
    }

    #[tokio::test]
    async fn the_system_clock_fires_on_real_time() {
        let wakeups = Wakeups::new(Arc::new(crate::clock::SystemClock));
        let mut due = Box::pin(wakeups.due());
        let at = Timestamp::now() + SignedDuration::from_millis(40);
        wakeups.schedule(named("soon"), Some(at));
        let fired = tokio::time::timeout(Duration::from_secs(5), due.next())
            .await
            .expect("fires");
        assert_eq!(fired, Some(named("soon")));
        assert!(Timestamp::now() >= at);
    }
}
