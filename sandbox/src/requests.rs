//! The request log: every request the sandbox served, so tests and benchmarks can count API
//! calls by verb and resource.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::faults::Verb;

/// One served request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub verb: Verb,
    /// The API group, `""` for core.
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: u16,
    /// `User-Agent` (kube-rs and kubectl set one) so tests can tell clients apart.
    pub user_agent: String,
    /// Owners a written object names with `blockOwnerDeletion: true`, as (group, plural,
    /// name): the OwnerReferencesPermissionEnforcement admission plugin lets a client set
    /// that only with `update` on the owner's `finalizers` subresource.
    pub blocked_owners: Vec<(String, String, String)>,
    /// The user the request was served as (after impersonation), when the sandbox enforces
    /// RBAC; None otherwise and for requests that did not authenticate (401).
    pub user: Option<String>,
    /// Refused by authentication or authorization (401, or RBAC's 403), not by admission
    /// (a 403 for a namespace being terminated or an exceeded quota is the server's answer
    /// to a permitted request).
    pub refused: bool,
}

impl RequestRecord {
    /// `plans` or `plans/status`.
    pub fn full_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

#[derive(Default)]
pub struct RequestLog {
    records: Mutex<Vec<RequestRecord>>,
}

impl RequestLog {
    pub fn record(&self, record: RequestRecord) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }

    /// Requests with this verb on `resource` (`plans`) or a subresource (`plans/status`).
    pub fn count(&self, verb: Verb, resource: &str) -> usize {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.verb == verb && r.full_resource() == resource)
            .count()
    }

    /// Counts by (verb, resource or resource/subresource).
    pub fn counts(&self) -> BTreeMap<(Verb, String), usize> {
        let mut counts = BTreeMap::new();
        for r in self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            *counts.entry((r.verb, r.full_resource())).or_insert(0) += 1;
        }
        counts
    }

    /// Requests refused by authentication or authorization (see [`RequestRecord::refused`]).
    pub fn denied(&self) -> Vec<RequestRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.refused)
            .cloned()
            .collect()
    }

    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
