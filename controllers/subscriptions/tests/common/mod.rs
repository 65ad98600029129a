//! The harness of the controller tests: a sandbox API server with Flotilla's CRDs that
//! enforces RBAC, `config/rbac/` applied from its files, and the real controllers running
//! against it in-process as the operator's ServiceAccount (`flotilla-system/flotilla`). The
//! tests' own client is the admin.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod client;
pub mod rbac;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::queue::ReconcileQueue;
use flotilla_runtime::testing::wait_for;
use flotilla_runtime::{Config, Operator, SharedClock, Shutdown, SystemClock};
use flotilla_sandbox::{Sandbox, Verb};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use client::ClientLog;

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The operator's backoff in tests: short, so that fault tests converge quickly, and far
/// apart, so that a test can tell which one the controller used.
pub const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// The longest transient retry delay in tests.
pub const BACKOFF_CAP: Duration = Duration::from_millis(800);
/// The shortest retry delay after a `403` in tests: above [`BACKOFF_CAP`], so a retry that
/// waited this long was not an ordinary transient retry.
pub const FORBIDDEN_BACKOFF: Duration = Duration::from_millis(1200);

/// A running sandbox and operator.
pub struct Harness {
    sandbox: Option<Sandbox>,
    /// The tests' own client.
    pub client: Client,
    /// Every request the operator's client (kube's stack without its retry layer; see
    /// [`client`]) sent, as the controllers saw it; canned responses for it.
    pub log: ClientLog,
    pub operator: Operator,
    controllers: Option<JoinHandle<()>>,
    denials_expected: std::sync::atomic::AtomicBool,
}

impl Harness {
    /// Starts the sandbox with the CRDs and runs every controller against it, with short
    /// backoffs so fault tests converge quickly.
    pub async fn start() -> Self {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// Like [`Harness::start`], with the operator reading time from `clock`.
    pub async fn start_with_clock(clock: SharedClock) -> Self {
        Self::start_with_rbac(clock, None).await
    }

    /// Like [`Harness::start`], with `removed` taken out of `config/rbac/` before the
    /// controllers start (the test expects denials).
    pub async fn start_without(removed: &flotilla_testkit::rbac::Grant) -> Self {
        Self::start_with_rbac(Arc::new(SystemClock), Some(removed)).await
    }

    async fn start_with_rbac(
        clock: SharedClock,
        removed: Option<&flotilla_testkit::rbac::Grant>,
    ) -> Self {
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
            .enforce_rbac()
            .start()
            .await
            .expect("sandbox starts");
        match removed {
            None => flotilla_testkit::rbac::install(&sandbox).await,
            Some(grant) => flotilla_testkit::rbac::install_without(&sandbox, grant).await,
        }
        let log = ClientLog::default();
        let operator_client =
            client::client(flotilla_testkit::rbac::operator_kube_config(&sandbox), &log);
        let client = client::client(sandbox.kube_config(), &ClientLog::default());
        let config = Config {
            backoff_base: BACKOFF_BASE,
            backoff_cap: BACKOFF_CAP,
            forbidden_backoff: FORBIDDEN_BACKOFF,
            concurrency: 4,
            ..Config::default()
        };
        let operator =
            Operator::new(operator_client, config, clock, Shutdown::new()).expect("operator");
        let running = operator.clone();
        let controllers = tokio::spawn(async move { flotilla_subscriptions::run(&running).await });
        Self {
            sandbox: Some(sandbox),
            client,
            log,
            operator,
            controllers: Some(controllers),
            denials_expected: std::sync::atomic::AtomicBool::new(removed.is_some()),
        }
    }

    /// Lets the sandbox refuse this test's operator requests (a test of what a 403 does);
    /// otherwise `stop()` fails when it refused the operator anything.
    pub fn expect_denials(&self) {
        self.denials_expected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The operator's requests the sandbox refused (401, 403), described.
    pub fn operator_denied(&self) -> Vec<String> {
        flotilla_testkit::rbac::denied_for(self.sandbox(), &flotilla_testkit::rbac::operator_user())
    }

    /// The grants of the operator's roles on a group and resource `scope` accepts that none of
    /// the operator's requests needed (see `flotilla_testkit::rbac::unneeded`).
    pub fn rbac_unneeded(
        &self,
        scope: impl Fn(&str, &str) -> bool,
    ) -> Vec<flotilla_testkit::rbac::Grant> {
        flotilla_testkit::rbac::unneeded(
            &self.sandbox().requests().snapshot(),
            &flotilla_testkit::rbac::operator_user(),
            scope,
        )
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

    /// The reconcile queue of `controller` (`plan`, `subscription`).
    pub fn queue(&self, controller: &'static str) -> ReconcileQueue {
        self.operator.queues.of(controller)
    }

    /// Makes the controller reconcile `name` once more and waits until that reconcile, and
    /// anything it queued, has finished: the point after which something that did not happen is
    /// not going to happen for this change. The touch is a ConfigMap controlled by the
    /// Subscription in its namespace `name` (its own metadata does not wake it: a predicate
    /// filters its watch).
    pub async fn reconcile_once_more(&self, name: &str) {
        const FINISHED: &str =
            r#"flotilla_reconcile_duration_seconds_count{controller="subscription"}"#;
        self.quiet("subscription").await;
        let before = self.metric(FINISHED);
        let uid = Api::<flotilla_crds::Subscription>::all(self.client.clone())
            .get(name)
            .await
            .expect("the Subscription")
            .metadata
            .uid
            .expect("a uid");
        let touch: ConfigMap = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": "test-touch",
                "labels": {"app.kubernetes.io/managed-by": "flotilla"},
                "ownerReferences": [{
                    "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
                    "name": name, "uid": uid, "controller": true,
                }],
            },
            "data": {"touched": before.to_string()},
        }))
        .expect("a ConfigMap");
        Api::<ConfigMap>::namespaced(self.client.clone(), name)
            .patch(
                "test-touch",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&touch),
            )
            .await
            .expect("touch");
        wait_for("a reconcile after the touch", WAIT, || async {
            (self.metric(FINISHED) > before).then_some(())
        })
        .await
        .expect("reconciled");
        self.quiet("subscription").await;
    }

    /// Waits until `controller` has nothing to do: no reconcile running, none queued, no
    /// retry scheduled. What a test waits for before asserting that nothing (more) happens.
    pub async fn quiet(&self, controller: &'static str) {
        let queue = self.queue(controller);
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

    /// Watch requests the sandbox has served (status 200) by resource plural.
    pub fn watches_served(&self) -> BTreeMap<String, usize> {
        let mut served = BTreeMap::new();
        for record in self.sandbox().requests().snapshot() {
            if record.verb == Verb::Watch && record.status == 200 {
                *served.entry(record.resource).or_insert(0) += 1;
            }
        }
        served
    }

    /// Waits until the sandbox has served at least `more` further watches of each resource
    /// than `before` (from [`Harness::watches_served`]): the watchers have resumed after a cut.
    pub async fn wait_for_rewatches(
        &self,
        before: &BTreeMap<String, usize>,
        more: &[(&str, usize)],
    ) {
        wait_for("the watches to resume", WAIT, || {
            let now = self.watches_served();
            let resumed = more.iter().all(|(resource, more)| {
                now.get(*resource).copied().unwrap_or(0)
                    >= before.get(*resource).copied().unwrap_or(0) + more
            });
            async move { resumed.then_some(()) }
        })
        .await
        .unwrap_or_else(|error| panic!("{error}: {:?}", self.watches_served()));
    }

    /// Trips the shutdown signal, waits for the controllers to drain, and checks that the
    /// sandbox refused the operator nothing (unless [`Harness::expect_denials`]) and that the
    /// operator's RBAC (`config/rbac`) granted every request they sent.
    pub async fn stop(mut self) {
        self.operator.shutdown.trigger();
        if let Some(controllers) = self.controllers.take() {
            tokio::time::timeout(WAIT, controllers)
                .await
                .expect("controllers stop after the shutdown signal")
                .expect("controller task");
        }
        if !self
            .denials_expected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let refused = self.operator_denied();
            assert!(
                refused.is_empty(),
                "the sandbox refused the operator ({}) requests config/rbac does not grant: {refused:#?}",
                flotilla_testkit::rbac::operator_user()
            );
        }
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.shutdown().await;
        }
        let denied = rbac::denied(&self.log.sent());
        assert!(
            denied.is_empty(),
            "config/rbac does not grant requests the operator sent: {denied:?}"
        );
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
