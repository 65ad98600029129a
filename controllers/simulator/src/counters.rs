//! What the simulated fleet did, readable while it runs.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared by every device task; cheap to bump.
#[derive(Debug, Default)]
pub struct Counters {
    polls: AtomicU64,
    not_modified: AtomicU64,
    config_data: AtomicU64,
    deployments: AtomicU64,
    cancels: AtomicU64,
    proceeding: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    canceled: AtomicU64,
    transport_errors: AtomicU64,
    errors_by_status: Mutex<BTreeMap<u16, u64>>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Polls of the device base (the heartbeats), `304` included.
    pub polls: u64,
    /// Polls answered `304 Not Modified`.
    pub not_modified: u64,
    /// `PUT configData` accepted.
    pub config_data: u64,
    /// `GET deploymentBase` answered.
    pub deployments: u64,
    /// `GET cancelAction` answered.
    pub cancels: u64,
    /// Feedback accepted, by what it reported.
    pub feedback_proceeding: u64,
    pub feedback_success: u64,
    pub feedback_failure: u64,
    pub feedback_canceled: u64,
    /// Requests that got no HTTP answer (connection refused, timeout).
    pub transport_errors: u64,
    /// Answers other than 2xx and 304, by status code.
    pub errors_by_status: BTreeMap<u16, u64>,
}

/// Which counter a request bumps when it succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Poll,
    NotModified,
    ConfigData,
    Deployment,
    Cancel,
    Proceeding,
    Succeeded,
    Failed,
    Canceled,
}

impl Counters {
    pub(crate) fn count(&self, event: Event) {
        let counter = match event {
            Event::Poll => &self.polls,
            Event::NotModified => &self.not_modified,
            Event::ConfigData => &self.config_data,
            Event::Deployment => &self.deployments,
            Event::Cancel => &self.cancels,
            Event::Proceeding => &self.proceeding,
            Event::Succeeded => &self.succeeded,
            Event::Failed => &self.failed,
            Event::Canceled => &self.canceled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error_status(&self, status: u16) {
        *self
            .errors_by_status
            .lock()
            .expect("not poisoned")
            .entry(status)
            .or_default() += 1;
    }

    pub(crate) fn transport_error(&self) {
        self.transport_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            polls: get(&self.polls),
            not_modified: get(&self.not_modified),
            config_data: get(&self.config_data),
            deployments: get(&self.deployments),
            cancels: get(&self.cancels),
            feedback_proceeding: get(&self.proceeding),
            feedback_success: get(&self.succeeded),
            feedback_failure: get(&self.failed),
            feedback_canceled: get(&self.canceled),
            transport_errors: get(&self.transport_errors),
            errors_by_status: self.errors_by_status.lock().expect("not poisoned").clone(),
        }
    }
}

impl Counts {
    /// Every answer other than 2xx and 304.
    pub fn errors(&self) -> u64 {
        self.errors_by_status.values().sum()
    }
}
