//! The state controllers share: the process-wide [`Operator`] and each controller's
//! [`Context`].

use std::sync::Arc;

use jiff::Timestamp;
use kube::Client;
use kube::runtime::events::Reporter;

use super::admin::AdminState;
use super::backoff::ErrorBackoff;
use super::clock::SharedClock;
use super::config::Config;
use super::events::Recorder;
use super::metrics::{ControllerMetrics, Metrics};
use super::queue::{ReconcileQueue, ReconcileQueues};
use super::readiness::Readiness;
use super::shutdown::Shutdown;

/// Everything one operator process shares between its controllers.
#[derive(Clone)]
pub struct Operator {
    /// The API client.
    pub client: Client,
    /// Tuning knobs.
    pub config: Arc<Config>,
    /// The source of "now" for every decision.
    pub clock: SharedClock,
    /// The metrics registry.
    pub metrics: Metrics,
    /// Cache-sync state for `/readyz`.
    pub readiness: Readiness,
    /// The process's shutdown signal.
    pub shutdown: Shutdown,
    /// Publishes Events (deduplicated into series by kube-runtime).
    pub recorder: Recorder,
    /// What each controller has queued and not started yet.
    pub queues: ReconcileQueues,
}

impl Operator {
    /// Assembles the shared state.
    pub fn new(
        client: Client,
        config: Config,
        clock: SharedClock,
        shutdown: Shutdown,
    ) -> Result<Self, prometheus::Error> {
        let mut reporter = Reporter::from(config.reporting_controller.as_str());
        if let Some(instance) = &config.reporting_instance {
            reporter.instance = Some(instance.clone());
        }
        let recorder = Recorder::new(client.clone(), reporter);
        let metrics = Metrics::new()?;
        let queues = ReconcileQueues::default();
        metrics.registry().register(Box::new(queues.collector()?))?;
        Ok(Self {
            client,
            config: Arc::new(config),
            clock,
            metrics,
            readiness: Readiness::new(),
            shutdown,
            recorder,
            queues,
        })
    }

    /// The context of one controller, with its own metric handles, backoff state and
    /// controller-specific `state` (its caches, typically).
    pub fn context<S>(&self, controller: &'static str, state: S) -> Arc<Context<S>> {
        Arc::new(Context {
            client: self.client.clone(),
            config: self.config.clone(),
            clock: self.clock.clone(),
            recorder: self.recorder.clone(),
            metrics: self.metrics.controller(controller),
            queue: self.queues.of(controller),
            backoff: ErrorBackoff::new(
                self.config.backoff_base,
                self.config.backoff_cap,
                self.clock.clone(),
            ),
            controller,
            state,
        })
    }

    /// The same operator with another shutdown signal (controllers that must stop earlier than
    /// the process, such as a leader that lost its Lease).
    pub fn with_shutdown(&self, shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            ..self.clone()
        }
    }

    /// What the admin server reports on.
    pub fn admin_state(&self) -> AdminState {
        AdminState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

/// What one controller's `reconcile` and `error_policy` receive.
pub struct Context<S> {
    /// The API client.
    pub client: Client,
    /// Tuning knobs.
    pub config: Arc<Config>,
    /// The source of "now".
    pub clock: SharedClock,
    /// Publishes Events.
    pub recorder: Recorder,
    /// This controller's metric handles.
    pub metrics: ControllerMetrics,
    /// Per-object retry delays for transient errors.
    pub backoff: ErrorBackoff,
    /// The reconciles this controller has been asked for and not started; the controller's
    /// trigger streams go through it (see [`crate::queue`]).
    pub queue: ReconcileQueue,
    /// Controller-specific state.
    pub state: S,
    controller: &'static str,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Context<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("controller", &self.controller)
            .field("config", &self.config)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<S> Context<S> {
    /// The controller's name (`plan`), used in metric labels and spans.
    pub fn controller(&self) -> &'static str {
        self.controller
    }

    /// The current time, from the clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
