//! The retained window of watch events, per resource, as the kube-apiserver's watch cache keeps
//! it (apiserver `storage/cacher/watch_cache.go`): a bounded buffer of the latest events of one
//! resource. A watch from a resourceVersion inside the window replays exactly the events it
//! missed; one from before the window gets `410 Expired` (`too old resource version: 12 (40)`),
//! and clients re-list. The same window bounds the consistent snapshots that `continue` tokens
//! and `resourceVersionMatch=Exact` lists are served from.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::Change;

/// How many events of each resource the sandbox retains for watches to resume from.
///
/// [`WatchWindow::default`] is the kube-apiserver's watch cache: 100 events per resource,
/// doubled (up to 102 400) whenever the event it would drop is younger than 75 seconds, halved
/// again (not below 100) once the newest quarter of the window is older than that. Tests that
/// want the re-list path (`410` → list → watch) to run choose a small fixed window with
/// [`WatchWindow::fixed`] or `Sandbox::builder().watch_window(20)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchWindow {
    lower: usize,
    upper: usize,
    fresh: Duration,
}

impl WatchWindow {
    /// The apiserver's `defaultLowerBoundCapacity`.
    pub const APISERVER_LOWER: usize = 100;
    /// The apiserver's `defaultUpperBoundCapacity`.
    pub const APISERVER_UPPER: usize = 100 * 1024;
    /// The apiserver's `eventFreshDuration`: the bookmark frequency (1 min) plus 15 s.
    pub const APISERVER_FRESH: Duration = Duration::from_secs(75);

    /// The kube-apiserver's dynamically sized watch cache (the default).
    pub const fn apiserver() -> Self {
        Self {
            lower: Self::APISERVER_LOWER,
            upper: Self::APISERVER_UPPER,
            fresh: Self::APISERVER_FRESH,
        }
    }

    /// Exactly `events` events per resource (at least 1), whatever their age.
    pub fn fixed(events: usize) -> Self {
        let events = events.max(1);
        Self {
            lower: events,
            upper: events,
            fresh: Self::APISERVER_FRESH,
        }
    }

    /// A window of `lower` events per resource that doubles, up to `upper`, while the event
    /// it would drop is younger than `fresh`, and halves back towards `lower` once the newest
    /// quarter of it is older than `fresh`.
    pub fn dynamic(lower: usize, upper: usize, fresh: Duration) -> Self {
        let lower = lower.max(1);
        Self {
            lower,
            upper: upper.max(lower),
            fresh,
        }
    }

    /// The fewest events retained per resource once that many happened.
    pub fn lower(&self) -> usize {
        self.lower
    }

    /// The most events retained per resource.
    pub fn upper(&self) -> usize {
        self.upper
    }
}

impl Default for WatchWindow {
    fn default() -> Self {
        Self::apiserver()
    }
}

/// A fixed window of this many events per resource.
impl From<usize> for WatchWindow {
    fn from(events: usize) -> Self {
        Self::fixed(events)
    }
}

/// The retained events of one resource, oldest first.
#[derive(Debug)]
pub(crate) struct RetainedEvents {
    events: VecDeque<(Arc<Change>, Instant)>,
    capacity: usize,
    config: WatchWindow,
    /// The resourceVersion the window starts after: the state the cache was (re)built from.
    list_rv: u64,
    /// Whether an event was dropped since the window started at `list_rv`.
    dropped: bool,
}

impl RetainedEvents {
    /// An empty window holding everything after `list_rv`.
    pub(crate) fn new(config: WatchWindow, list_rv: u64) -> Self {
        Self {
            events: VecDeque::new(),
            capacity: config.lower,
            config,
            list_rv,
            dropped: false,
        }
    }

    /// Watches from a resourceVersion below this one get 410: the apiserver's `oldest - 1`,
    /// where `oldest` is the first event it can still deliver.
    pub(crate) fn horizon(&self) -> u64 {
        if !self.dropped {
            return self.list_rv;
        }
        self.events
            .front()
            .map(|(c, _)| c.rv.saturating_sub(1))
            .unwrap_or(self.list_rv)
    }

    /// Events after `rv`, oldest first; `None` when some of them are no longer retained.
    pub(crate) fn since(&self, rv: u64) -> Option<impl Iterator<Item = &Arc<Change>>> {
        if rv < self.horizon() {
            return None;
        }
        let first = self.events.partition_point(|(c, _)| c.rv <= rv);
        Some(self.events.range(first..).map(|(c, _)| c))
    }

    pub(crate) fn push(&mut self, change: Arc<Change>, now: Instant) {
        self.resize(now);
        while self.events.len() >= self.capacity {
            self.events.pop_front();
            self.dropped = true;
        }
        self.events.push_back((change, now));
    }

    /// Forgets every event, as after an etcd compaction and re-list at `rv`.
    pub(crate) fn restart_at(&mut self, rv: u64) {
        self.events.clear();
        self.list_rv = rv;
        self.dropped = false;
    }

    /// `resizeCacheLocked`: grow while a full window holds only fresh events, shrink when even
    /// the newest quarter is stale (which keeps the size from flapping).
    fn resize(&mut self, now: Instant) {
        let full = self.events.len() >= self.capacity;
        if !full || self.config.lower == self.config.upper {
            return;
        }
        let age = |(_, at): &(Arc<Change>, Instant)| now.saturating_duration_since(*at);
        let oldest_fresh = self
            .events
            .front()
            .is_some_and(|e| age(e) < self.config.fresh);
        if oldest_fresh {
            self.capacity = (self.capacity * 2).min(self.config.upper);
            return;
        }
        let quarter = self.events.len() - self.capacity / 4;
        let newest_quarter_stale = self
            .events
            .get(quarter)
            .is_some_and(|e| age(e) > self.config.fresh);
        if newest_quarter_stale {
            let capacity = (self.capacity / 2).max(self.config.lower);
            while self.events.len() > capacity {
                self.events.pop_front();
                self.dropped = true;
            }
            self.capacity = capacity;
        }
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ResourceKey;
    use crate::store::ChangeType;
    use serde_json::json;

    fn change(rv: u64) -> Arc<Change> {
        Arc::new(Change {
            rv,
            resource: ResourceKey::new("", "configmaps"),
            change: ChangeType::Added,
            object: Arc::new(json!({})),
            previous: None,
        })
    }

    fn rvs<'a>(events: impl Iterator<Item = &'a Arc<Change>>) -> Vec<u64> {
        events.map(|c| c.rv).collect()
    }

    #[test]
    fn a_fixed_window_keeps_the_newest_events_and_reports_the_apiserver_horizon() {
        let mut window = RetainedEvents::new(WatchWindow::fixed(3), 10);
        let now = Instant::now();
        assert_eq!(window.horizon(), 10);
        for rv in [12, 15, 16] {
            window.push(change(rv), now);
        }
        // Nothing dropped yet: everything after the list is there, even rv 10 and 11.
        assert_eq!(window.horizon(), 10);
        assert_eq!(rvs(window.since(10).unwrap()), [12, 15, 16]);
        assert!(window.since(9).is_none());
        window.push(change(20), now);
        // rv 12 is gone; the oldest deliverable event is 15, so 14 is the oldest start.
        assert_eq!(window.horizon(), 14);
        assert!(window.since(13).is_none());
        assert_eq!(rvs(window.since(14).unwrap()), [15, 16, 20]);
        assert_eq!(rvs(window.since(16).unwrap()), [20]);
        assert_eq!(rvs(window.since(20).unwrap()), Vec::<u64>::new());
    }

    #[test]
    fn the_apiserver_window_grows_while_events_are_fresh_and_shrinks_when_stale() {
        let config = WatchWindow::dynamic(4, 16, Duration::from_secs(75));
        let mut window = RetainedEvents::new(config, 0);
        let start = Instant::now();
        for rv in 1..=20 {
            window.push(change(rv), start);
        }
        // Doubled 4 → 8 → 16, then full at the upper bound: the oldest 4 were dropped.
        assert_eq!((window.capacity(), window.len()), (16, 16));
        assert_eq!(window.horizon(), 4);
        // Much later, the newest quarter is stale: the window halves on each event.
        let later = start + Duration::from_secs(300);
        window.push(change(21), later);
        assert_eq!(window.capacity(), 8);
        assert_eq!(window.horizon(), 13);
        // The newest quarter still starts with a stale event: down to the lower bound.
        window.push(change(22), later);
        assert_eq!(window.capacity(), 4);
        window.push(change(23), later);
        assert_eq!(window.capacity(), 4);
        assert_eq!(window.horizon(), 19);
        assert_eq!(rvs(window.since(19).unwrap()), [20, 21, 22, 23]);
    }

    #[test]
    fn restarting_forgets_every_event() {
        let mut window = RetainedEvents::new(WatchWindow::fixed(3), 0);
        for rv in 1..=5 {
            window.push(change(rv), Instant::now());
        }
        window.restart_at(9);
        assert_eq!(window.horizon(), 9);
        assert!(window.since(8).is_none());
        assert_eq!(window.since(9).unwrap().count(), 0);
    }
}
