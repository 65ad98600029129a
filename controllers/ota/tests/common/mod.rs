//! The harness of the OTA controller tests: a sandbox API server with Flotilla's CRDs and the
//! real OTA controllers running against it in-process.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod fleet;

use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::testing::wait_for;
use flotilla_runtime::{Config, Operator, Shutdown, SystemClock};
use flotilla_sandbox::{Sandbox, Verb};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The namespace every test object lives in.
pub const NAMESPACE: &str = "default";

/// The operator's `User-Agent`, which tells its requests apart from the gateway's, the
/// simulator's and the tests' own in the sandbox's request log.
pub const OPERATOR_USER_AGENT: &str = "flotilla-operator-under-test";

/// The rules of the operator's ClusterRole and leader-election Role in `config/rbac/`.
pub fn operator_rules() -> Vec<flotilla_sandbox::rbac::Rule> {
    let rbac = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rbac");
    flotilla_sandbox::rbac::rules_in(&[
        &rbac.join("role.yaml"),
        &rbac.join("leader_election_role.yaml"),
    ])
    .expect("config/rbac is readable")
}

/// A running sandbox and operator.
pub struct Harness {
    sandbox: Option<Sandbox>,
    /// The tests' own client.
    pub client: Client,
    pub operator: Operator,
    controllers: Option<JoinHandle<()>>,
    selection: flotilla_ota::Selection,
    client_retries: bool,
}

impl Harness {
    /// Starts the sandbox with the CRDs and runs the FirmwareRelease controller against it
    /// (the tests write rollouts' status themselves).
    pub async fn start() -> Self {
        Self::start_with(flotilla_ota::Selection {
            release: true,
            rollout: false,
        })
        .await
    }

    /// Starts the sandbox with the CRDs and runs the selected OTA controllers against it.
    pub async fn start_with(selection: flotilla_ota::Selection) -> Self {
        Self::start_with_client(selection, true).await
    }

    /// As [`Harness::start_with`]; `client_retries: false` takes kube's retry layer (429, 503
    /// and 504 retried inside the client, `Retry-After` honoured) out of the operator's
    /// client, so that every injected fault reaches the controller itself.
    pub async fn start_with_client(
        selection: flotilla_ota::Selection,
        client_retries: bool,
    ) -> Self {
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
        let (operator, controllers) = spawn_operator(&sandbox, config, selection, client_retries);
        Self {
            sandbox: Some(sandbox),
            client,
            operator,
            controllers: Some(controllers),
            selection,
            client_retries,
        }
    }

    /// The sandbox API server.
    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox
            .as_ref()
            .expect("the sandbox runs until stop()")
    }

    /// Waits until every cache reports synced.
    pub async fn ready(&self) {
        let readiness = self.operator.readiness.clone();
        wait_for("the operator's caches to sync", WAIT, || {
            let report = readiness.report();
            async move { report.is_ready().then_some(()) }
        })
        .await
        .expect("ready");
    }

    /// Waits until `controller` has nothing to do: no reconcile running, none queued.
    pub async fn quiet(&self, controller: &'static str) {
        let queue = self.operator.queues.of(controller);
        let started = format!(r#"flotilla_reconciliations_total{{controller="{controller}"}}"#);
        let finished =
            format!(r#"flotilla_reconcile_duration_seconds_count{{controller="{controller}"}}"#);
        wait_for(
            format!("the {controller} controller to be quiet"),
            WAIT,
            || {
                let quiet = queue.is_empty() && self.metric(&started) == self.metric(&finished);
                async move { quiet.then_some(()) }
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}: {queue:?}"));
    }

    /// Served requests of `verb` on `resource` (e.g. `firmwarereleases/status`).
    pub fn served(&self, verb: Verb, resource: &str) -> usize {
        self.sandbox()
            .requests()
            .snapshot()
            .iter()
            .filter(|r| r.verb == verb && r.full_resource() == resource)
            .count()
    }

    /// Stops the operator (its in-memory state goes with it) and starts a fresh one against
    /// the same API server, as after a leader change: a graceful stop — the shutdown signal,
    /// then in-flight reconciles finish.
    pub async fn restart(&mut self) {
        self.operator.shutdown.trigger();
        if let Some(controllers) = self.controllers.take() {
            tokio::time::timeout(WAIT, controllers)
                .await
                .expect("controllers stop after the shutdown signal")
                .expect("controller task");
        }
        self.respawn();
    }

    /// Kills the operator as a crash would — its task is aborted wherever it is, mid-reconcile
    /// or mid-request, with no shutdown signal and nothing finished — and starts a fresh one
    /// against the same API server.
    pub async fn crash(&mut self) {
        if let Some(controllers) = self.controllers.take() {
            controllers.abort();
            let ended = tokio::time::timeout(WAIT, controllers)
                .await
                .expect("an aborted task ends");
            assert!(
                ended.as_ref().is_err_and(|e| e.is_cancelled()) || ended.is_ok(),
                "the controller task panicked: {ended:?}"
            );
        }
        self.respawn();
    }

    fn respawn(&mut self) {
        let config = (*self.operator.config).clone();
        let (operator, controllers) =
            spawn_operator(self.sandbox(), config, self.selection, self.client_retries);
        self.controllers = Some(controllers);
        self.operator = operator;
    }

    /// Requests of `verb` on `resource` that succeeded (2xx): the writes that happened.
    pub fn succeeded(&self, verb: Verb, resource: &str) -> usize {
        self.sandbox()
            .requests()
            .snapshot()
            .iter()
            .filter(|r| r.verb == verb && r.full_resource() == resource && r.status < 300)
            .count()
    }

    /// The operator's requests so far checked against `config/rbac/`; `unused` is judged over
    /// the resources `scope` accepts.
    pub fn rbac_report(
        &self,
        scope: impl Fn(&str, &str) -> bool,
    ) -> flotilla_sandbox::rbac::Report {
        let requests = self
            .sandbox
            .as_ref()
            .map(|s| s.requests().snapshot())
            .unwrap_or_default();
        flotilla_sandbox::rbac::check(
            requests
                .iter()
                .filter(|r| r.user_agent == OPERATOR_USER_AGENT)
                .flat_map(flotilla_sandbox::RequestRecord::required),
            &operator_rules(),
            scope,
        )
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
        let denied = self.rbac_report(|_, _| false).denied;
        assert!(
            denied.is_empty(),
            "config/rbac does not grant requests the operator sent: {denied:?}"
        );
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.shutdown().await;
        }
    }

    /// The namespaced API of `K` in [`NAMESPACE`].
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Creates an object in [`NAMESPACE`] from JSON.
    pub async fn create<K>(&self, object: serde_json::Value) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(object).expect("valid object");
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|error| panic!("create {}: {error}", object.name_any()))
    }

    /// Writes `status` of a `K` through its status subresource (as the gateway or the rollout
    /// controller would).
    pub async fn write_status<K>(&self, name: &str, status: serde_json::Value)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|error| panic!("status of {name}: {error}"));
    }

    /// The value of one sample in the operator's metrics.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.operator.metrics.render().expect("metrics render");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |value| value.trim().parse().expect("numeric sample"))
    }

    /// Events (events.k8s.io/v1) about the object `kind`/`name` in [`NAMESPACE`].
    pub async fn events_about(&self, kind: &str, name: &str) -> Vec<Event> {
        self.api::<Event>()
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

/// An operator running the selected controllers against `sandbox`, on its own client.
fn spawn_operator(
    sandbox: &Sandbox,
    config: Config,
    selection: flotilla_ota::Selection,
    client_retries: bool,
) -> (Operator, JoinHandle<()>) {
    let mut kube_config = sandbox.kube_config();
    kube_config.default_retry = client_retries;
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(OPERATOR_USER_AGENT),
    ));
    let client = Client::try_from(kube_config).expect("a plain-HTTP client");
    let operator =
        Operator::new(client, config, Arc::new(SystemClock), Shutdown::new()).expect("operator");
    let running = operator.clone();
    let controllers = tokio::spawn(async move { flotilla_ota::run(&running, selection).await });
    (operator, controllers)
}

/// Every test ends by checking that `config/rbac/` granted each request the operator sent, so
/// a rule trimmed too far fails the tests that need it.
impl Drop for Harness {
    fn drop(&mut self) {
        self.operator.shutdown.trigger();
        if !std::thread::panicking() {
            let denied = self.rbac_report(|_, _| false).denied;
            assert!(
                denied.is_empty(),
                "config/rbac does not grant requests the operator sent: {denied:?}"
            );
        }
    }
}

/// A valid FirmwareRelease of `version`.
pub fn release(name: &str, version: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "FirmwareRelease",
        "metadata": {"name": name},
        "spec": {
            "version": version,
            "artifact": {
                "url": "https://firmware.example.com/fw.bin",
                "sha256": "ab".repeat(32),
                "sizeBytes": 1024,
            },
            "compatibleModels": ["gw-100"],
        },
    })
}

/// A Device of model gw-100.
pub fn device(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Device",
        "metadata": {"name": name, "labels": {"ring": "canary"}},
        "spec": {"model": "gw-100"},
    })
}

/// A FirmwareRollout of `release`.
pub fn rollout(name: &str, release: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "FirmwareRollout",
        "metadata": {"name": name},
        "spec": {"release": release, "selector": {"matchLabels": {"ring": "canary"}}},
    })
}
