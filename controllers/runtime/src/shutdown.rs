//! One shutdown signal for the whole process.
//!
//! SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C) trips a single token; every
//! controller is built with `Controller::graceful_shutdown_on(shutdown.signalled())`, so it stops
//! taking new work and lets in-flight reconciles finish, and the admin server reports not-ready
//! while draining.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// A shutdown signal that can be awaited from many places. Clones share the signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that only [`Shutdown::trigger`] trips (tests, `flotilla dev` embedding).
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal tripped by the first SIGTERM or SIGINT. Must be called inside a Tokio runtime.
    pub fn on_process_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let reason = wait_for_signal().await;
            tracing::info!(
                signal = reason,
                "shutdown requested; finishing in-flight reconciles"
            );
            trigger.trigger();
        });
        shutdown
    }

    /// A signal that trips with this one, and can also be tripped on its own (say, when a
    /// leader loses its Lease) without stopping the rest of the process.
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
        }
    }

    /// Trips the signal. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the signal has been tripped.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the signal is tripped (immediately if it already was).
    pub fn signalled(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        self.token.clone().cancelled_owned()
    }
}

/// Waits for SIGTERM or SIGINT and says which one came.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the operator");
                ctrl_c().await
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c().await
    }
}

async fn ctrl_c() -> &'static str {
    match tokio::signal::ctrl_c().await {
        Ok(()) => "SIGINT",
        Err(error) => {
            // Without a signal handler the process can still be stopped by SIGKILL; never
            // trigger shutdown spuriously.
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_clone_sees_the_signal() {
        let shutdown = Shutdown::new();
        let waiters: Vec<_> = (0..3).map(|_| tokio::spawn(shutdown.signalled())).collect();
        assert!(!shutdown.is_triggered());
        shutdown.clone().trigger();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("woken")
                .expect("joined");
        }
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn a_child_follows_its_parent_but_not_the_reverse() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(child.is_triggered());
        assert!(!parent.is_triggered());
        let other = parent.child();
        parent.trigger();
        assert!(other.is_triggered());
    }

    #[tokio::test]
    async fn a_late_waiter_returns_at_once() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        tokio::time::timeout(Duration::from_millis(100), shutdown.signalled())
            .await
            .expect("already signalled");
    }
}
