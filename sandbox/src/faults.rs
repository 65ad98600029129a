//! Fault injection: tests make the API server fail, slow down or drop watches on purpose, to
//! prove that controllers converge anyway.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// A Kubernetes audit verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fail the next `times` requests that match a verb and resource with an HTTP status.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub verb: Verb,
    /// Resource plural, e.g. `plans`.
    pub resource: String,
    /// `Some("status")` matches only the status subresource; `None` only the main resource.
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: u16,
    pub retry_after: Option<u64>,
    pub times: usize,
}

impl FaultRule {
    pub fn new(verb: Verb, resource: &str) -> Self {
        Self {
            verb,
            resource: resource.to_string(),
            subresource: None,
            namespace: None,
            name: None,
            status: 500,
            retry_after: None,
            times: 1,
        }
    }

    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.to_string());
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    fn matches(&self, req: &RequestInfo<'_>) -> bool {
        self.verb == req.verb
            && self.resource == req.resource
            && self.subresource.as_deref() == req.subresource
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| Some(ns) == req.namespace)
            && self.name.as_deref().is_none_or(|n| Some(n) == req.name)
    }
}

/// What a fault rule is matched against.
pub struct RequestInfo<'a> {
    pub verb: Verb,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The injected failure a request gets instead of being served.
#[derive(Debug, Clone)]
pub struct InjectedFailure {
    pub status: u16,
    pub retry_after: Option<u64>,
}

/// The fault injection controls of one sandbox.
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    latency: Mutex<Duration>,
    /// Firings so far by HTTP status.
    fired: Mutex<BTreeMap<u16, usize>>,
    /// Bumped to end every open watch stream.
    watch_generation: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            latency: Mutex::new(Duration::ZERO),
            fired: Mutex::new(BTreeMap::new()),
            watch_generation: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// Adds a rule; rules are consumed in the order they were added.
    pub fn inject(&self, rule: FaultRule) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
    }

    /// Removes every pending rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = Duration::ZERO;
    }

    /// Adds this much latency to every request.
    pub fn latency(&self, latency: Duration) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = latency;
    }

    pub fn current_latency(&self) -> Duration {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every open watch stream, as a load balancer or apiserver restart does.
    pub fn cut_watches(&self) {
        self.watch_generation.send_modify(|g| *g += 1);
    }

    /// A receiver that changes when watches must be cut.
    pub fn watch_cuts(&self) -> watch::Receiver<u64> {
        self.watch_generation.subscribe()
    }

    /// Pending rules that have not fired yet.
    pub fn pending(&self) -> usize {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| r.times)
            .sum()
    }

    /// How many requests got an injected failure so far, by HTTP status (rules cleared
    /// before firing count nothing).
    pub fn fired(&self) -> BTreeMap<u16, usize> {
        self.fired.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes one firing of the first rule that matches the request, if any.
    pub fn take(&self, req: &RequestInfo<'_>) -> Option<InjectedFailure> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let idx = rules.iter().position(|r| r.times > 0 && r.matches(req))?;
        let rule = &mut rules[idx];
        rule.times -= 1;
        let failure = InjectedFailure {
            status: rule.status,
            retry_after: rule.retry_after,
        };
        if rule.times == 0 {
            rules.remove(idx);
        }
        *self
            .fired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(failure.status)
            .or_default() += 1;
        Some(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(verb: Verb, resource: &'a str, sub: Option<&'a str>) -> RequestInfo<'a> {
        RequestInfo {
            verb,
            resource,
            subresource: sub,
            namespace: None,
            name: Some("gold"),
        }
    }

    #[test]
    fn a_rule_fires_exactly_its_number_of_times() {
        let faults = Faults::default();
        faults.inject(
            FaultRule::new(Verb::Patch, "plans")
                .subresource("status")
                .times(2),
        );
        assert!(faults.take(&req(Verb::Patch, "plans", None)).is_none());
        assert!(
            faults
                .take(&req(Verb::Get, "plans", Some("status")))
                .is_none()
        );
        assert_eq!(
            faults
                .take(&req(Verb::Patch, "plans", Some("status")))
                .unwrap()
                .status,
            500
        );
        assert!(
            faults
                .take(&req(Verb::Patch, "plans", Some("status")))
                .is_some()
        );
        assert!(
            faults
                .take(&req(Verb::Patch, "plans", Some("status")))
                .is_none()
        );
        assert_eq!(faults.pending(), 0);
        assert_eq!(faults.fired(), BTreeMap::from([(500, 2)]));
    }

    #[test]
    fn rules_match_name_and_carry_retry_after() {
        let faults = Faults::default();
        faults.inject(
            FaultRule::new(Verb::Get, "plans")
                .name("silver")
                .status(429)
                .retry_after(2),
        );
        assert!(faults.take(&req(Verb::Get, "plans", None)).is_none());
        let mut r = req(Verb::Get, "plans", None);
        r.name = Some("silver");
        let failure = faults.take(&r).unwrap();
        assert_eq!((failure.status, failure.retry_after), (429, Some(2)));
    }
}
