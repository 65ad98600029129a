//! What `/readyz` waits for: every controller's caches filled from the API server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::watch::Synced;

/// The readiness of the operator's components (one per watched cache). Clones share state.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

/// What `/readyz` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessReport {
    /// Components whose caches are not synced yet.
    pub pending: Vec<String>,
    /// How many components are registered.
    pub registered: usize,
}

impl ReadinessReport {
    /// Ready once something is registered and nothing is pending: an operator whose
    /// controllers have not even started is not ready.
    pub fn is_ready(&self) -> bool {
        self.registered > 0 && self.pending.is_empty()
    }
}

impl Readiness {
    /// An empty set of components (not ready until at least one registers and syncs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a component that is not ready yet.
    pub fn register(&self, component: impl Into<String>) -> ReadinessHandle {
        let component = component.into();
        self.lock().insert(component.clone(), false);
        ReadinessHandle {
            readiness: self.clone(),
            component,
        }
    }

    /// Registers `component` and marks it ready once its cache has synced.
    pub fn track(&self, component: impl Into<String>, synced: Synced) {
        let handle = self.register(component);
        tokio::spawn(async move {
            if synced.wait().await {
                handle.mark_ready();
            } else {
                tracing::warn!(
                    component = handle.component,
                    "cache stopped before it synced"
                );
            }
        });
    }

    /// The current state.
    pub fn report(&self) -> ReadinessReport {
        let components = self.lock();
        ReadinessReport {
            pending: components
                .iter()
                .filter(|(_, ready)| !**ready)
                .map(|(name, _)| name.clone())
                .collect(),
            registered: components.len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks one component ready.
#[derive(Debug)]
pub struct ReadinessHandle {
    readiness: Readiness,
    component: String,
}

impl ReadinessHandle {
    /// The component is ready.
    pub fn mark_ready(&self) {
        self.readiness.lock().insert(self.component.clone(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nothing_registered_is_not_ready() {
        assert!(!Readiness::new().report().is_ready());
    }

    #[test]
    fn ready_once_every_component_is() {
        let readiness = Readiness::new();
        let plans = readiness.register("plans");
        let subscriptions = readiness.register("subscriptions");
        assert_eq!(readiness.report().pending, ["plans", "subscriptions"]);
        plans.mark_ready();
        assert!(!readiness.report().is_ready());
        subscriptions.mark_ready();
        assert!(readiness.report().is_ready());
    }

    #[tokio::test]
    async fn a_cache_becomes_ready_after_its_first_list() {
        let readiness = Readiness::new();
        let (tx, rx) = tokio::sync::watch::channel(false);
        readiness.track("configmaps", Synced::from_receiver(rx));
        tokio::task::yield_now().await;
        assert_eq!(readiness.report().pending, ["configmaps"]);
        tx.send_replace(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !readiness.report().is_ready() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache never reported ready"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
