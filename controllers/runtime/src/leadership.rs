//! Leader election on a `coordination.k8s.io/v1` Lease (`kube-lease-manager`).
//!
//! With several replicas only the Lease holder runs controllers and writes; the others wait as
//! warm standbys (ready, so rollouts proceed) and take over when the holder releases the Lease
//! on shutdown or stops renewing it. A leader that *loses* the Lease stops its controllers and
//! the process exits with an error, as client-go's leader election does: restarting from a
//! clean state is simpler and safer than demoting in place.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::context::Operator;
use super::shutdown::Shutdown;

/// Where the Lease lives and who we are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This replica's identity (its pod name); random when `None`.
    pub identity: Option<String>,
    /// Seconds a holder keeps the Lease without renewing it.
    pub duration_seconds: u64,
    /// Seconds before expiry at which the holder renews (tolerated clock skew).
    pub grace_seconds: u64,
}

impl LeaseSettings {
    /// A Lease with client-go-like timing: 15 s validity, renewed 5 s before expiry.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: Option<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity,
            duration_seconds: 15,
            grace_seconds: 5,
        }
    }
}

/// Why leading ended badly.
#[derive(Debug, thiserror::Error)]
pub enum LeadershipError {
    /// The Lease could not be read or created.
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// What failed.
        #[source]
        source: LeaseManagerError,
    },
    /// Another replica took the Lease over while this one led.
    #[error("lost the leader Lease {namespace}/{name}; exiting so that the new leader runs alone")]
    Lost {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
    },
}

/// This process's view of the Lease.
pub struct Leadership {
    state: watch::Receiver<bool>,
    manager: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Starts competing for the Lease (creating it if absent).
    pub async fn start(client: Client, settings: &LeaseSettings) -> Result<Self, LeadershipError> {
        let mut builder = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_duration(settings.duration_seconds)
            .with_grace(settings.grace_seconds);
        if let Some(identity) = &settings.identity {
            builder = builder.with_identity(identity);
        }
        let manager = builder
            .build()
            .await
            .map_err(|source| LeadershipError::Lease {
                namespace: settings.namespace.clone(),
                name: settings.name.clone(),
                source,
            })?;
        let (state, manager) = manager.watch().await;
        Ok(Self { state, manager })
    }

    /// Whether this process holds the Lease now.
    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// Waits until this process holds the Lease; `false` if `shutdown` trips first.
    pub async fn acquired(&mut self, shutdown: &Shutdown) -> bool {
        tokio::select! {
            held = self.state.wait_for(|leader| *leader) => held.is_ok(),
            () = shutdown.signalled() => false,
        }
    }

    /// Resolves once this process no longer holds the Lease (or competing stopped).
    pub async fn lost(&mut self) {
        // An error means the manager task ended, which also means we no longer renew.
        let _ = self.state.wait_for(|leader| !*leader).await;
    }

    /// Stops competing and gives the Lease up, so a standby takes over at once instead of
    /// after the Lease expires.
    pub async fn release(self) {
        drop(self.state);
        match self.manager.await {
            Ok(Ok(_)) => tracing::info!("released the leader Lease"),
            Ok(Err(error)) => tracing::warn!(%error, "could not release the leader Lease"),
            Err(error) => tracing::warn!(%error, "leader election task failed"),
        }
    }
}

/// Runs `controllers` only while this process holds the Lease.
///
/// `/readyz` learns of a component `leadership` that is ready once the Lease has been read, so a
/// standby is ready without running controllers. Returns `Ok` after a shutdown, and
/// [`LeadershipError::Lost`] if the Lease was taken over (after the controllers drained).
pub async fn run_while_leading<F, Fut>(
    operator: &Operator,
    settings: &LeaseSettings,
    controllers: F,
) -> Result<(), LeadershipError>
where
    F: FnOnce(Operator) -> Fut,
    Fut: Future<Output = ()>,
{
    let known = operator.readiness.register("leadership");
    let mut leadership = Leadership::start(operator.client.clone(), settings).await?;
    known.mark_ready();
    tracing::info!(lease = %settings.name, namespace = %settings.namespace, "waiting for the leader Lease");
    if !leadership.acquired(&operator.shutdown).await {
        leadership.release().await;
        return Ok(());
    }
    tracing::info!(lease = %settings.name, "leading: starting controllers");

    // The controllers stop on the process's shutdown or when leadership is lost.
    let leading = operator.with_shutdown(operator.shutdown.child());
    let stop = leading.shutdown.clone();
    let running = controllers(leading);
    tokio::pin!(running);
    let lost = tokio::select! {
        () = &mut running => false,
        () = leadership.lost() => {
            tracing::error!(lease = %settings.name, "lost the leader Lease: stopping controllers");
            stop.trigger();
            running.await;
            true
        }
    };
    leadership.release().await;
    if lost {
        Err(LeadershipError::Lost {
            namespace: settings.namespace.clone(),
            name: settings.name.clone(),
        })
    } else {
        Ok(())
    }
}
