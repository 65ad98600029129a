//! One [`ChannelDelivery`] per usable Channel, shared by every campaign that sends through it:
//! that is what makes a Channel's rate limit and breaker one per Channel, not one per
//! campaign. Built from the [`Registry`] when a sender first asks, and again when the Channel
//! controller publishes a changed Channel or Secret (a new `Usable`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use flotilla_crds::channel::BreakerStatus;

use super::registry::{Registry, Usable};
use super::{ChannelDelivery, ChannelRateLimit, ChannelTransport, CircuitBreaker, TransportError};

type Key = (String, String);

/// Called with a Channel's `(namespace, name)` when its breaker changes state.
pub type BreakerChanged = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The deliveries of the usable Channels; cheap to clone.
#[derive(Clone, Default)]
pub struct Deliveries {
    registry: Registry,
    built: Arc<Mutex<HashMap<Key, Built>>>,
    breaker_changed: Option<BreakerChanged>,
    messages: Option<prometheus::IntCounterVec>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Built {
    from: Arc<Usable>,
    delivery: Arc<ChannelDelivery>,
}

impl Deliveries {
    /// Deliveries for the Channels `registry` publishes.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            built: Arc::default(),
            breaker_changed: None,
            messages: None,
        }
    }

    /// Counts every delivery attempt in `messages` (`flotilla_campaign_messages_total`:
    /// labels `namespace`, `channel`, `result`).
    pub fn counting(mut self, messages: prometheus::IntCounterVec) -> Self {
        self.messages = Some(messages);
        self
    }

    /// Calls `changed` whenever a Channel's breaker opens, half-opens or closes (the Channel
    /// controller writes it into the Channel's status).
    pub fn on_breaker_change(mut self, changed: BreakerChanged) -> Self {
        self.breaker_changed = Some(changed);
        self
    }

    /// Sends `message` through Channel `namespace/name`'s `delivery`, announcing a change of
    /// its breaker's state.
    pub async fn deliver(
        &self,
        namespace: &str,
        name: &str,
        delivery: &ChannelDelivery,
        message: &super::Message,
    ) -> super::Attempt {
        let before = delivery.breaker_status().state;
        let attempt = delivery.deliver(message, jiff::Timestamp::now).await;
        if delivery.breaker_status().state != before
            && let Some(changed) = &self.breaker_changed
        {
            changed(namespace, name);
        }
        attempt
    }

    /// The registry this reads.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The delivery of Channel `namespace/name`, or `None` while it is not usable.
    ///
    /// # Errors
    /// The Channel is published but its transport cannot be built (the Channel controller's
    /// checks should have caught it).
    pub fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ChannelDelivery>>, TransportError> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(usable) = self.registry.get(namespace, name) else {
            built.remove(&key);
            return Ok(None);
        };
        if let Some(known) = built.get(&key)
            && Arc::ptr_eq(&known.from, &usable)
        {
            return Ok(Some(Arc::clone(&known.delivery)));
        }
        let transport = ChannelTransport::new(&usable.spec, &usable.credentials)?;
        let limit = ChannelRateLimit::new(usable.spec.rate_limit.as_ref());
        let breaker = CircuitBreaker::new(&usable.spec.circuit_breaker.clone().unwrap_or_default());
        let mut delivery = ChannelDelivery::new(transport, limit, breaker);
        if let Some(messages) = &self.messages {
            delivery = delivery.counting(messages, namespace, name);
        }
        let delivery = Arc::new(delivery);
        built.insert(
            key,
            Built {
                from: usable,
                delivery: Arc::clone(&delivery),
            },
        );
        Ok(Some(delivery))
    }

    /// Every Channel sent through since the start, `(namespace, name)`, with its breaker.
    pub fn breakers(&self) -> Vec<(Key, BreakerStatus)> {
        let built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        built
            .iter()
            .map(|(key, b)| (key.clone(), b.delivery.breaker_status()))
            .collect()
    }

    /// The breaker of Channel `namespace/name` as its senders see it, once one has sent.
    pub fn breaker_status(&self, namespace: &str, name: &str) -> Option<BreakerStatus> {
        let built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        built
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|b| b.delivery.breaker_status())
    }
}
