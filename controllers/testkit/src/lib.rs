//! The harness of Flotilla's controller tests: a sandbox API server with every Flotilla CRD
//! that enforces RBAC, with `config/rbac/` applied from its files; an operator
//! process-in-a-task running the controllers a test selects as its ServiceAccount
//! (`flotilla-system/flotilla`, its client also marked by [`OPERATOR_USER_AGENT`]); and the
//! checks every test ends with — the sandbox refused none of the operator's requests, and each
//! request the operator sent is granted by `config/rbac/`. The test's own client is the admin.
//!
//! A domain's tests wrap [`Harness`] with what they start (`spawn`) and their fixtures.

pub mod chaos;
pub mod rbac;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_runtime::testing::wait_for;
use flotilla_runtime::{Config, Operator, Shutdown, SystemClock};
use flotilla_sandbox::{Sandbox, Verb};
use futures::future::BoxFuture;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// How long a test waits for the operator to get somewhere.
pub const WAIT: Duration = Duration::from_secs(10);

/// The namespace the namespaced helpers use.
pub const NAMESPACE: &str = "default";

/// The User-Agent of the operator's client.
pub const OPERATOR_USER_AGENT: &str = "flotilla-operator-under-test";

/// Starts the selected controllers on an operator; the future runs until its shutdown signal.
pub type Spawn = Arc<dyn Fn(Operator) -> BoxFuture<'static, ()> + Send + Sync>;

/// The operator's rules: `config/rbac/role.yaml` and `leader_election_role.yaml`, read from
/// the files.
pub fn operator_rules() -> Vec<flotilla_sandbox::rbac::Rule> {
    let rbac = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rbac");
    flotilla_sandbox::rbac::rules_in(&[
        &rbac.join("role.yaml"),
        &rbac.join("leader_election_role.yaml"),
    ])
    .expect("config/rbac is readable")
}

/// Logs to the test's output, filtered by `RUST_LOG` (default `flotilla=debug,kube=warn`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("flotilla=debug,kube=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// A sandbox and an operator running some controllers against it.
pub struct Harness {
    sandbox: Option<Sandbox>,
    /// The test's own client (not the operator's): the sandbox's admin.
    pub client: Client,
    /// The running operator.
    pub operator: Operator,
    controllers: Option<JoinHandle<()>>,
    spawn: Spawn,
    client_retries: bool,
    denials_expected: AtomicBool,
}

impl Harness {
    /// A fresh sandbox and an operator running `spawn`, with kube's client retries on.
    pub async fn start(spawn: Spawn) -> Self {
        Self::start_with_client(spawn, true).await
    }

    /// As [`Harness::start`]; `client_retries: false` switches kube's own retry of 429/503/504
    /// off for the operator's client, so fault tests reach the controllers.
    pub async fn start_with_client(spawn: Spawn, client_retries: bool) -> Self {
        Self::start_with_rbac(spawn, client_retries, None).await
    }

    /// As [`Harness::start_with_client`], with `config/rbac/` applied without `removed` (see
    /// [`rbac::objects_without`]): a test that the operator needs that grant. Such a test
    /// expects denials ([`Harness::expect_denials`] is set).
    pub async fn start_with_rbac(
        spawn: Spawn,
        client_retries: bool,
        removed: Option<&rbac::Grant>,
    ) -> Self {
        init_tracing();
        let sandbox = Sandbox::builder()
            .crds(flotilla_crds::all_crds())
            .enforce_rbac()
            .start()
            .await
            .expect("sandbox starts");
        match removed {
            None => rbac::install(&sandbox).await,
            Some(grant) => rbac::install_without(&sandbox, grant).await,
        }
        let client = sandbox.client();
        let config = Config {
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(800),
            concurrency: 4,
            ..Config::default()
        };
        let (operator, controllers) = spawn_operator(&sandbox, config, &spawn, client_retries);
        Self {
            sandbox: Some(sandbox),
            client,
            operator,
            controllers: Some(controllers),
            spawn,
            client_retries,
            denials_expected: AtomicBool::new(removed.is_some()),
        }
    }

    /// Lets this test's operator be refused requests (a test of what a 403 does); otherwise
    /// `stop()` fails when the sandbox refused the operator anything.
    pub fn expect_denials(&self) {
        self.denials_expected.store(true, Ordering::Relaxed);
    }

    /// The operator's requests the sandbox refused (401, 403), described.
    pub fn operator_denied(&self) -> Vec<String> {
        self.sandbox
            .as_ref()
            .map(|s| rbac::denied_for(s, &rbac::operator_user()))
            .unwrap_or_default()
    }

    /// The grants of the operator's roles on a group and resource `scope` accepts that no
    /// request the operator sent needed: each one removed alone would refuse nothing
    /// ([`rbac::unneeded`]).
    pub fn rbac_unneeded(&self, scope: impl Fn(&str, &str) -> bool) -> Vec<rbac::Grant> {
        let requests = self
            .sandbox
            .as_ref()
            .map(|s| s.requests().snapshot())
            .unwrap_or_default();
        rbac::unneeded(&requests, &rbac::operator_user(), scope)
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox
            .as_ref()
            .expect("the sandbox runs until stop()")
    }

    /// Waits until every cache the operator tracks has listed.
    pub async fn ready(&self) {
        let readiness = self.operator.readiness.clone();
        wait_for("the operator's caches to sync", WAIT, || {
            let report = readiness.report();
            async move { report.is_ready().then_some(()) }
        })
        .await
        .expect("ready");
    }

    /// Waits until `controller` has nothing queued and no reconcile running.
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

    /// Requests the sandbox served with `verb` on `resource` (e.g. `devices/status`).
    pub fn served(&self, verb: Verb, resource: &str) -> usize {
        self.sandbox()
            .requests()
            .snapshot()
            .iter()
            .filter(|r| r.verb == verb && r.full_resource() == resource)
            .count()
    }

    /// Of those, the ones that succeeded.
    pub fn succeeded(&self, verb: Verb, resource: &str) -> usize {
        self.sandbox()
            .requests()
            .snapshot()
            .iter()
            .filter(|r| r.verb == verb && r.full_resource() == resource && r.status < 300)
            .count()
    }

    /// Stops the operator gracefully and starts a new one on the same sandbox.
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

    /// Kills the operator mid-flight (its task aborted, nothing drained) and starts a new one.
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
            spawn_operator(self.sandbox(), config, &self.spawn, self.client_retries);
        self.controllers = Some(controllers);
        self.operator = operator;
    }

    /// The operator's requests checked against `config/rbac/`; `scope` says which granted
    /// (group, resource) pairs must all be used.
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

    /// Stops the operator and the sandbox; fails if the sandbox refused the operator a request
    /// (unless [`Harness::expect_denials`]) or the operator sent a request `config/rbac/` does
    /// not grant.
    pub async fn stop(mut self) {
        self.operator.shutdown.trigger();
        if let Some(controllers) = self.controllers.take() {
            tokio::time::timeout(WAIT, controllers)
                .await
                .expect("controllers stop after the shutdown signal")
                .expect("controller task");
        }
        self.assert_rbac_grants_everything();
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.shutdown().await;
        }
    }

    fn assert_rbac_grants_everything(&self) {
        if !self.denials_expected.load(Ordering::Relaxed) {
            let refused = self.operator_denied();
            assert!(
                refused.is_empty(),
                "the sandbox refused the operator ({}) requests config/rbac does not grant: {refused:#?}",
                rbac::operator_user()
            );
        }
        let denied = self.rbac_report(|_, _| false).denied;
        assert!(
            denied.is_empty(),
            "config/rbac does not grant requests the operator sent: {denied:?}"
        );
    }

    /// The test client's Api for `K` in [`NAMESPACE`].
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Waits up to `timeout` until the object `name` of kind `K` in [`NAMESPACE`] satisfies
    /// `check`, and returns it; panics with `what` and the object as it last was.
    pub async fn wait_object<K>(
        &self,
        what: &str,
        name: &str,
        timeout: Duration,
        check: impl Fn(&K) -> bool,
    ) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        let found = wait_for(what, timeout, || {
            let api = api.clone();
            let check = &check;
            async move { api.get(name).await.ok().filter(|object| check(object)) }
        })
        .await;
        match found {
            Ok(object) => object,
            Err(error) => panic!("{error}: {:#?}", api.get(name).await),
        }
    }

    /// Creates `object` in [`NAMESPACE`].
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

    /// Merge-patches the status of `name` in [`NAMESPACE`] (as another writer would).
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

    /// The value of one metric series (`name{labels}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.operator.metrics.render().expect("metrics render");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |value| value.trim().parse().expect("numeric sample"))
    }

    /// The Events in [`NAMESPACE`] about the object of `kind` named `name`.
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

fn spawn_operator(
    sandbox: &Sandbox,
    config: Config,
    spawn: &Spawn,
    client_retries: bool,
) -> (Operator, JoinHandle<()>) {
    // The operator's ServiceAccount, with a token minted for this process.
    let mut kube_config = rbac::operator_kube_config(sandbox);
    kube_config.default_retry = client_retries;
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(OPERATOR_USER_AGENT),
    ));
    let client = Client::try_from(kube_config).expect("a client of the sandbox");
    let operator =
        Operator::new(client, config, Arc::new(SystemClock), Shutdown::new()).expect("operator");
    let controllers = tokio::spawn(spawn(operator.clone()));
    (operator, controllers)
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.operator.shutdown.trigger();
        if !std::thread::panicking() {
            self.assert_rbac_grants_everything();
        }
    }
}
