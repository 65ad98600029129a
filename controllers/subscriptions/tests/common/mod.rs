//! The harness of the controller tests: a sandbox API server with Flotilla's CRDs and the real
//! controllers running against it in-process.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::testing::wait_for;
use flotilla_runtime::{Config, Operator, SharedClock, Shutdown, SystemClock};
use flotilla_sandbox::Sandbox;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running sandbox and operator.
pub struct Harness {
    sandbox: Option<Sandbox>,
    pub client: Client,
    pub operator: Operator,
    controllers: Option<JoinHandle<()>>,
}

impl Harness {
    /// Starts the sandbox with the CRDs and runs every controller against it, with short
    /// backoffs so fault tests converge quickly.
    pub async fn start() -> Self {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// Like [`Harness::start`], with the operator reading time from `clock`.
    pub async fn start_with_clock(clock: SharedClock) -> Self {
        // Logs are captured per test and shown when it fails (`RUST_LOG` overrides the filter).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("flotilla=debug,kube=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .with_ansi(false)
            .try_init();
        let sandbox = Sandbox::builder()
            .crds(flotilla_crds::all_crds())
            .start()
            .await
            .expect("sandbox starts");
        let client = sandbox.client();
        let config = Config {
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(800),
            concurrency: 4,
            ..Config::default()
        };
        let operator =
            Operator::new(client.clone(), config, clock, Shutdown::new()).expect("operator");
        let running = operator.clone();
        let controllers = tokio::spawn(async move { flotilla_subscriptions::run(&running).await });
        Self {
            sandbox: Some(sandbox),
            client,
            operator,
            controllers: Some(controllers),
        }
    }

    /// The sandbox API server.
    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox
            .as_ref()
            .expect("the sandbox runs until stop()")
    }

    /// Waits until every cache reports synced (what `/readyz` reports).
    pub async fn ready(&self) {
        let readiness = self.operator.readiness.clone();
        wait_for("the operator's caches to sync", WAIT, || {
            let report = readiness.report();
            async move { report.is_ready().then_some(()) }
        })
        .await
        .unwrap_or_else(|error| panic!("{error}: {:?}", self.operator.readiness.report()));
    }

    /// Trips the shutdown signal and waits for the controllers to drain.
    pub async fn stop(mut self) {
        self.operator.shutdown.trigger();
        if let Some(controllers) = self.controllers.take() {
            tokio::time::timeout(WAIT, controllers)
                .await
                .expect("controllers stop after the shutdown signal")
                .expect("controller task");
        }
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.shutdown().await;
        }
    }

    /// Creates a cluster-scoped object from JSON.
    pub async fn create<K>(&self, object: serde_json::Value) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(object).expect("valid object");
        Api::<K>::all(self.client.clone())
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|error| panic!("create {}: {error}", object.name_any()))
    }

    /// The value of one sample in the operator's metrics, e.g.
    /// `flotilla_reconciliations_total{controller="plan"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.operator.metrics.render().expect("metrics render");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |value| value.trim().parse().expect("numeric sample"))
    }

    /// Events (events.k8s.io/v1) about the object named `name`, of kind `kind`.
    pub async fn events_about(&self, kind: &str, name: &str) -> Vec<Event> {
        // Cluster-scoped objects get their Events in `default`, as kube-runtime's recorder does.
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        events
            .list(&ListParams::default())
            .await
            .map(|list| list.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|event| {
                event.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // A failing test never reaches `stop`; make sure its controllers do not outlive it.
        self.operator.shutdown.trigger();
    }
}

/// A valid Plan.
pub fn plan(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": name},
        "spec": {
            "displayName": "Team",
            "quota": {"hard": {"requests.cpu": "4", "limits.memory": "8Gi", "pods": 20}},
            "limitRange": {
                "default": {"cpu": "500m", "memory": "512Mi"},
                "defaultRequest": {"cpu": "100m"},
                "max": {"cpu": "2", "memory": "4Gi"},
            },
            "features": {"sso": true},
            "trialDays": 14,
            "gracePeriodDays": 7,
        },
    })
}

/// A Plan the schema accepts but the controller refuses: a container's default request above
/// its default limit (the schema cannot compare quantities).
pub fn invalid_plan(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": name},
        "spec": {
            "displayName": "Broken",
            "limitRange": {
                "default": {"cpu": "500m"},
                "defaultRequest": {"cpu": "3"},
            },
        },
    })
}

/// A Subscription on `plan`.
pub fn subscription(name: &str, plan: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Subscription",
        "metadata": {"name": name},
        "spec": {"plan": plan},
    })
}
