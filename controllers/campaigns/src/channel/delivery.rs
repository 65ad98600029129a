//! [`ChannelDelivery`]: one Channel's transport, its shared rate limit and its circuit breaker
//! put together in the order a sender must use them.

use std::sync::{Arc, Mutex};

use flotilla_crds::channel::BreakerStatus;
use jiff::Timestamp;
use prometheus::{IntCounter, IntCounterVec};

use super::{ChannelRateLimit, ChannelTransport, CircuitBreaker, Message};
use crate::campaign::retry::Outcome;

/// What became of one [`ChannelDelivery::deliver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// It was sent; this is what the channel answered.
    Sent(Outcome),
    /// Not sent: the channel's breaker is open. Try again at `until` (this is no delivery
    /// attempt, so it does not count against the Campaign's `maxAttempts`).
    Held {
        /// When the breaker lets messages through again.
        until: Timestamp,
    },
}

/// Everything one Channel needs to send. Build one per Channel (again when the Channel or its
/// Secret changes) and share it between every Campaign with an `Arc`.
#[derive(Debug)]
pub struct ChannelDelivery {
    transport: ChannelTransport,
    limit: Arc<ChannelRateLimit>,
    // Held only between awaits, never across one.
    breaker: Mutex<CircuitBreaker>,
    counters: Option<AttemptCounters>,
}

/// `flotilla_campaign_messages_total` of one Channel, by result: looked up once, not per
/// message.
#[derive(Debug)]
struct AttemptCounters {
    delivered: IntCounter,
    transient: IntCounter,
    permanent: IntCounter,
    held: IntCounter,
}

/// The `result` label values of `flotilla_campaign_messages_total`.
pub const ATTEMPT_RESULTS: [&str; 4] = ["delivered", "transient", "permanent", "held"];

impl ChannelDelivery {
    /// Puts a Channel's pieces together.
    pub fn new(
        transport: ChannelTransport,
        limit: Arc<ChannelRateLimit>,
        breaker: CircuitBreaker,
    ) -> Self {
        Self {
            transport,
            limit,
            breaker: Mutex::new(breaker),
            counters: None,
        }
    }

    /// Counts every attempt in `messages` (labels `namespace`, `channel`, `result`), under
    /// Channel `namespace/name`.
    pub fn counting(mut self, messages: &IntCounterVec, namespace: &str, name: &str) -> Self {
        let counter = |result| messages.with_label_values(&[namespace, name, result]);
        let [delivered, transient, permanent, held] = ATTEMPT_RESULTS;
        self.counters = Some(AttemptCounters {
            delivered: counter(delivered),
            transient: counter(transient),
            permanent: counter(permanent),
            held: counter(held),
        });
        self
    }

    /// Sends `message` once, when the rate limit and the breaker let it; `now` is the clock.
    ///
    /// # Expected flow
    /// An open breaker holds the message at once (no rate taken); otherwise it waits for a
    /// [`ChannelRateLimit::acquire`] permit, asks the breaker again (the permit may have taken
    /// a while, and in HalfOpen this is where a probe is counted), sends, and records the
    /// outcome with the breaker.
    pub async fn deliver(&self, message: &Message, now: impl Fn() -> Timestamp) -> Attempt {
        let attempt = self.attempt(message, now).await;
        if let Some(counters) = &self.counters {
            match &attempt {
                Attempt::Sent(Outcome::Delivered) => counters.delivered.inc(),
                Attempt::Sent(Outcome::Transient { .. }) => counters.transient.inc(),
                Attempt::Sent(Outcome::Permanent { .. }) => counters.permanent.inc(),
                Attempt::Held { .. } => counters.held.inc(),
            }
        }
        attempt
    }

    async fn attempt(&self, message: &Message, now: impl Fn() -> Timestamp) -> Attempt {
        if let Some(until) = self.breaker().blocked_until(now()) {
            return Attempt::Held { until };
        }
        let _permit = self.limit.acquire().await;
        {
            let mut breaker = self.breaker();
            let at = now();
            if !breaker.allow(at) {
                let until = breaker.blocked_until(at).unwrap_or(at);
                return Attempt::Held { until };
            }
        }
        let outcome = self.transport.send(message).await;
        self.breaker().record(&outcome, now());
        Attempt::Sent(outcome)
    }

    /// `status.breaker` for the Channel controller to write.
    pub fn breaker_status(&self) -> BreakerStatus {
        self.breaker().status()
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        // A panic elsewhere cannot leave the breaker half-updated: every change is one
        // assignment, so a poisoned lock still holds a consistent breaker.
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
