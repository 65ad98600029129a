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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, stream};
use jiff::Timestamp;
use kube::runtime::reflector::{Lookup, ObjectRef};
use tokio::sync::Notify;

use super::clock::SharedClock;

/// Each object's moment, and the objects in the order of their moments: every change and every
/// wake-up is O(log n), whatever the number of objects scheduled.
struct Schedule<K: Lookup>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Each object's moment, with the sequence number that orders ties.
    at: HashMap<ObjectRef<K>, (Timestamp, u64)>,
    /// The same entries, earliest first.
    by_time: BTreeMap<(Timestamp, u64), ObjectRef<K>>,
    next: u64,
}

impl<K: Lookup> Schedule<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn new() -> Self {
        Self {
            at: HashMap::new(),
            by_time: BTreeMap::new(),
            next: 0,
        }
    }

    /// Sets or clears `object`'s moment; returns whether anything changed.
    fn set(&mut self, object: ObjectRef<K>, at: Option<Timestamp>) -> bool {
        if at.is_some() && self.at.get(&object).map(|(t, _)| *t) == at {
            return false;
        }
        let previous = self.at.remove(&object);
        if let Some(slot) = previous {
            self.by_time.remove(&slot);
        }
        match at {
            Some(at) => {
                let slot = (at, self.next);
                self.next += 1;
                self.at.insert(object.clone(), slot);
                self.by_time.insert(slot, object);
                true
            }
            None => previous.is_some(),
        }
    }

    /// Removes the entries due at `now` into `ready`, earliest first; returns the earliest
    /// moment still ahead.
    fn take_due(
        &mut self,
        now: Timestamp,
        ready: &mut VecDeque<ObjectRef<K>>,
    ) -> Option<Timestamp> {
        while let Some(entry) = self.by_time.first_entry() {
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            let object = entry.remove();
            self.at.remove(&object);
            ready.push_back(object);
        }
        None
    }
}

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
    due_at: Mutex<Schedule<K>>,
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
                due_at: Mutex::new(Schedule::new()),
                changed: Notify::new(),
            }),
        }
    }

    /// Records that `object` is next due at `at`, replacing what was recorded before; `None`
    /// forgets it (nothing is due any more, or the object is gone).
    pub fn schedule(&self, object: ObjectRef<K>, at: Option<Timestamp>) {
        let changed = self.lock().set(object, at);
        if changed {
            // A stored permit wakes the stream even if it is not waiting yet.
            self.inner.changed.notify_one();
        }
    }

    /// When `object` is next due, if it is.
    pub fn scheduled(&self, object: &ObjectRef<K>) -> Option<Timestamp> {
        self.lock().at.get(object).map(|(at, _)| *at)
    }

    /// How many objects have a wake-up recorded.
    pub fn len(&self) -> usize {
        self.lock().at.len()
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
        self.lock().take_due(now, ready)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule<K>> {
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

    #[test]
    fn the_schedule_keeps_one_moment_per_object_in_time_order() {
        let mut schedule = Schedule::<ConfigMap>::new();
        assert!(schedule.set(named("b"), Some(ts("2030-01-02T00:00:00Z"))));
        assert!(schedule.set(named("a"), Some(ts("2030-01-03T00:00:00Z"))));
        assert!(schedule.set(named("c"), Some(ts("2030-01-02T00:00:00Z"))));
        assert!(
            !schedule.set(named("c"), Some(ts("2030-01-02T00:00:00Z"))),
            "unchanged"
        );
        // Moved earlier: its old slot goes.
        assert!(schedule.set(named("a"), Some(ts("2030-01-01T00:00:00Z"))));
        assert!(schedule.set(named("d"), Some(ts("2030-02-01T00:00:00Z"))));
        assert!(schedule.set(named("d"), None));
        assert!(!schedule.set(named("d"), None), "already forgotten");
        assert_eq!(schedule.at.len(), 3);
        assert_eq!(schedule.by_time.len(), 3);

        let mut ready = VecDeque::new();
        let next = schedule.take_due(ts("2030-01-02T00:00:00Z"), &mut ready);
        // Earliest first; equal moments in the order they were set.
        assert_eq!(Vec::from(ready), [named("a"), named("b"), named("c")]);
        assert_eq!(next, None);
        assert!(schedule.at.is_empty() && schedule.by_time.is_empty());

        schedule.set(named("e"), Some(ts("2030-03-01T00:00:00Z")));
        let mut ready = VecDeque::new();
        assert_eq!(
            schedule.take_due(ts("2030-01-05T00:00:00Z"), &mut ready),
            Some(ts("2030-03-01T00:00:00Z"))
        );
        assert!(ready.is_empty());
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
