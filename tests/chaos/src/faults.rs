//! The API faults a chaos run injects through the sandbox's fault API, one drawn at a time.
//! kube's client retries 429, 503 and 504 by itself (honouring Retry-After), so those mostly
//! test that layer; 500 and 409 reach the controllers, and most faults drawn are those.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_sandbox::{FaultRule, Sandbox, Verb};

use crate::Rng;

/// A kind of fault, as the figures count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// `500 Internal Server Error` on a write.
    Error500,
    /// `409 Conflict` on a write.
    Conflict409,
    /// `429 Too Many Requests` with `Retry-After: 1`.
    TooMany429,
    /// Latency added to every request for one step.
    Latency,
    /// Every open watch ended.
    CutWatches,
    /// Every open watch ended and every resource's window emptied: resuming gets
    /// `410 Gone` and the watchers list again.
    ExpireWatches,
}

/// The writes the faults hit: (verb, resource, subresource), the operator's writes of each
/// domain.
const WRITES: &[(Verb, &str, Option<&str>)] = &[
    (Verb::Patch, "subscriptions", Some("status")),
    (Verb::Patch, "plans", Some("status")),
    (Verb::Patch, "namespaces", None),
    (Verb::Patch, "resourcequotas", None),
    (Verb::Patch, "rolebindings", None),
    (Verb::Patch, "configmaps", None),
    (Verb::Patch, "devices", None),
    (Verb::Patch, "firmwarerollouts", Some("status")),
    (Verb::Patch, "campaigns", Some("status")),
    // The campaign's delivery ledger: optimistic-concurrency updates of ConfigMaps.
    (Verb::Update, "configmaps", None),
    (Verb::Patch, "channels", Some("status")),
];

/// What was injected, by kind (rules armed; a rule may still be pending when the run ends).
#[derive(Default)]
pub struct Injector {
    /// Armed so far, by kind.
    pub armed: BTreeMap<FaultKind, usize>,
    latency_on: bool,
}

impl Injector {
    /// Draws one fault and injects it. Ends the latency of the previous step, if any.
    pub fn inject(&mut self, sandbox: &Sandbox, rng: &mut Rng) -> FaultKind {
        let faults = sandbox.faults();
        if self.latency_on {
            faults.latency(Duration::ZERO);
            self.latency_on = false;
        }
        let kind = match rng.below(20) {
            0..=6 => FaultKind::Error500,
            7..=11 => FaultKind::Conflict409,
            12..=13 => FaultKind::TooMany429,
            14..=15 => FaultKind::Latency,
            16..=17 => FaultKind::CutWatches,
            _ => FaultKind::ExpireWatches,
        };
        match kind {
            FaultKind::Error500 | FaultKind::Conflict409 | FaultKind::TooMany429 => {
                let (verb, resource, subresource) = WRITES[rng.below(WRITES.len() as u64) as usize];
                let mut rule = FaultRule::new(verb, resource).times(1 + rng.below(3) as usize);
                if let Some(subresource) = subresource {
                    rule = rule.subresource(subresource);
                }
                rule = match kind {
                    FaultKind::Error500 => rule.status(500),
                    FaultKind::Conflict409 => rule.status(409),
                    _ => rule.status(429).retry_after(1),
                };
                faults.inject(rule);
            }
            FaultKind::Latency => {
                faults.latency(rng.millis(20, 150));
                self.latency_on = true;
            }
            FaultKind::CutWatches => faults.cut_watches(),
            FaultKind::ExpireWatches => sandbox.expire_watches(),
        }
        *self.armed.entry(kind).or_default() += 1;
        kind
    }

    /// Ends latency and drops the rules that did not fire: the run now converges.
    pub fn stop(&mut self, sandbox: &Sandbox) {
        sandbox.faults().clear();
        self.latency_on = false;
    }
}
