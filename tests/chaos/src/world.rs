//! The world a chaos run happens in: an RBAC-enforcing sandbox with `config/rbac/` applied,
//! the device gateway (as its ServiceAccount) and a simulated fleet, a webhook receiver, and
//! the workload the operator processes work on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use flotilla_crds::{
    Channel, ChannelPhase, Device, FirmwareRelease, FirmwareReleasePhase, Subscription,
    SubscriptionPhase,
};
use flotilla_gateway::GatewayConfig;
use flotilla_runtime::testing::wait_for;
use flotilla_runtime::{Shutdown, SystemClock};
use flotilla_sandbox::Sandbox;
use flotilla_simulator::{FleetSpec, ModelShare, Simulation};
use flotilla_testkit::rbac;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::process::Launch;

/// The field manager of the harness's own writes.
pub const FIELD_MANAGER: &str = "flotilla-chaos";
/// The fleet's namespace: the one `config/rbac/` binds the gateway's Role in.
pub const FLEET: &str = rbac::GATEWAY_NAMESPACE;
/// The Campaign's namespace.
pub const NEWS: &str = "news";
/// The rollout.
pub const ROLLOUT: &str = "chaos-update";
/// The campaign.
pub const CAMPAIGN: &str = "chaos-news";
/// The rollout's soak time (the in-flight count depends on it).
pub const SOAK: SignedDuration = SignedDuration::from_millis(300);
/// The label selecting the campaign's audience.
pub const AUDIENCE_LABEL: &str = "chaos.flotilla.dev/audience";
/// The version rolled out.
pub const TARGET_VERSION: &str = "2.0.0";
/// How long the first steps (setup, no chaos yet) may take.
pub const SETUP: Duration = Duration::from_secs(45);

/// How big a run is.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Subscriptions on the tenant Plan (two namespaces each, with quota, LimitRange and
    /// NetworkPolicy) created before the chaos; in the campaign's audience.
    pub tenants: usize,
    /// Tenant Subscriptions created during the chaos (not in the audience).
    pub late_tenants: usize,
    /// Subscriptions created before the chaos and deleted during it (not in the audience).
    pub doomed: usize,
    /// Subscriptions on the mailing Plan (one namespace, no quota); in the audience.
    pub readers: usize,
    /// Every n-th reader has opted out of campaigns.
    pub opted_out_every: usize,
    /// Simulated devices the rollout updates.
    pub devices: usize,
    /// The rollout's maxInFlight.
    pub max_in_flight: u32,
    /// The campaign's throttle, so that it is still sending while the chaos runs.
    pub messages_per_minute: u32,
    /// The campaign's holdout.
    pub holdout_percent: u32,
}

impl Workload {
    /// Names of the tenant Subscriptions created before the chaos.
    pub fn tenant_names(&self) -> Vec<String> {
        (0..self.tenants).map(|i| format!("tenant-{i}")).collect()
    }
    /// Names of the tenant Subscriptions created during the chaos.
    pub fn late_tenant_names(&self) -> Vec<String> {
        (0..self.late_tenants)
            .map(|i| format!("late-{i}"))
            .collect()
    }
    /// Names of the Subscriptions deleted during the chaos.
    pub fn doomed_names(&self) -> Vec<String> {
        (0..self.doomed).map(|i| format!("doomed-{i}")).collect()
    }
    /// Names of the readers.
    pub fn reader_names(&self) -> Vec<String> {
        (0..self.readers).map(|i| format!("reader-{i}")).collect()
    }
    /// Whether reader `i` opted out.
    pub fn opted_out(&self, i: usize) -> bool {
        self.opted_out_every > 0 && i % self.opted_out_every == self.opted_out_every - 1
    }
}

/// One webhook delivery: the `Idempotency-Key` (the message id) and the recipient's e-mail.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The message id.
    pub key: String,
    /// `recipient.email` of the body.
    pub email: String,
}

/// Everything but the operator processes.
pub struct World {
    /// The API server.
    pub sandbox: Sandbox,
    /// The admin's client (the harness's own requests).
    pub client: Client,
    /// How operator processes start.
    pub launch: Launch,
    /// The workload.
    pub workload: Workload,
    pub(crate) deliveries: Arc<Mutex<Vec<Delivery>>>,
    pub(crate) sampler: Option<Sampler>,
    shutdown: Shutdown,
    simulation: Option<Simulation>,
    gateway_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl World {
    /// The sandbox with `config/rbac/` applied, the operator's kubeconfig written, the
    /// namespaces, the webhook receiver and the gateway started. No operator runs yet.
    pub async fn start(
        binary: impl Into<PathBuf>,
        workload: Workload,
        lease_seconds: Option<u64>,
    ) -> anyhow::Result<Self> {
        flotilla_runtime::crypto::use_ring();
        let sandbox = Sandbox::builder()
            .crds(flotilla_crds::all_crds())
            .enforce_rbac()
            .start()
            .await
            .context("starting the sandbox")?;
        rbac::install(&sandbox).await;
        let client = sandbox.client();
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("operator.kubeconfig");
        let token = sandbox
            .service_account_token(rbac::OPERATOR_NAMESPACE, rbac::OPERATOR_SERVICE_ACCOUNT)?;
        sandbox.write_kubeconfig_for_token(&kubeconfig, &token)?;
        let log_dir = std::env::var_os("FLOTILLA_CHAOS_LOG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.path().to_path_buf());
        std::fs::create_dir_all(&log_dir)?;
        for namespace in [FLEET, NEWS] {
            apply(
                &Api::<Namespace>::all(client.clone()),
                namespace,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            )
            .await?;
        }
        let deliveries = Arc::default();
        let shutdown = Shutdown::new();
        let gateway_url = start_gateway(&sandbox, &shutdown).await?;
        Ok(Self {
            launch: Launch {
                binary: binary.into(),
                kubeconfig,
                log_dir,
                lease_seconds,
            },
            sandbox,
            client,
            workload,
            deliveries,
            sampler: None,
            shutdown,
            simulation: None,
            gateway_url,
            _dir: dir,
        })
    }

    /// The Plans, the Subscriptions that exist before the chaos, the FirmwareReleases, the
    /// fleet's Devices and its simulation, and the webhook Channel: everything the campaign
    /// and the rollout need. Needs an operator running; waits until the Subscriptions are
    /// Active, the Devices reported, the releases and the Channel Ready.
    pub async fn prepare(&mut self) -> anyhow::Result<()> {
        let plans = Api::<flotilla_crds::Plan>::all(self.client.clone());
        apply(
            &plans,
            "chaos-tenant",
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
                "metadata": {"name": "chaos-tenant"},
                "spec": {
                    "displayName": "Tenant",
                    "quota": {"hard": {"requests.cpu": "2", "pods": "20"}},
                    "limitRange": {"default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}},
                    "networkIsolation": true,
                    "trialDays": 14,
                },
            }),
        )
        .await?;
        apply(
            &plans,
            "chaos-mail",
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
                "metadata": {"name": "chaos-mail"},
                "spec": {"displayName": "Newsletter"},
            }),
        )
        .await?;
        for name in self.workload.tenant_names() {
            self.apply_tenant(&name, true).await?;
        }
        for name in self.workload.doomed_names() {
            self.apply_tenant(&name, false).await?;
        }
        for (i, name) in self.workload.reader_names().iter().enumerate() {
            let subscription =
                subscription(name, "chaos-mail", vec![], true, self.workload.opted_out(i));
            apply(&self.subscriptions(), name, subscription).await?;
        }

        let releases: Api<FirmwareRelease> = Api::namespaced(self.client.clone(), FLEET);
        for version in ["1.0.0", TARGET_VERSION] {
            let name = format!("fw-{}", version.replace('.', "-"));
            apply(
                &releases,
                &name,
                json!({
                    "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRelease",
                    "metadata": {"name": name, "namespace": FLEET},
                    "spec": {"version": version, "compatibleModels": ["alpha", "beta"],
                             "artifact": {"url": format!("https://fw.example.com/{version}.bin"),
                                          "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                                          "sizeBytes": 4096}},
                }),
            )
            .await?;
        }
        self.start_fleet().await?;

        let url = receiver_url(self.deliveries.clone()).await?;
        let channels: Api<Channel> = Api::namespaced(self.client.clone(), NEWS);
        apply(
            &channels,
            "hook",
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
                "metadata": {"name": "hook", "namespace": NEWS},
                "spec": {"type": "Webhook", "webhook": {"url": url}},
            }),
        )
        .await?;

        let subscriptions = self.subscriptions();
        let mut expected = self.workload.tenant_names();
        expected.extend(self.workload.doomed_names());
        expected.extend(self.workload.reader_names());
        wait_for("every Subscription Active", SETUP, || async {
            let list = subscriptions.list(&ListParams::default()).await.ok()?;
            let active = list
                .items
                .iter()
                .filter(|s| {
                    s.status.as_ref().and_then(|s| s.phase) == Some(SubscriptionPhase::Active)
                })
                .count();
            (active == expected.len()).then_some(())
        })
        .await?;
        wait_for("the FirmwareReleases Ready", SETUP, || async {
            let list = releases.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|r| {
                    r.status.as_ref().and_then(|s| s.phase) == Some(FirmwareReleasePhase::Ready)
                })
                .then_some(())
        })
        .await?;
        wait_for("Channel hook Ready", SETUP, || async {
            let status = channels.get_opt("hook").await.ok().flatten()?.status?;
            (status.phase == Some(ChannelPhase::Ready)).then_some(())
        })
        .await?;
        Ok(())
    }

    /// Starts the campaign to the audience and the rollout over the fleet, and the in-flight
    /// sampler: what the chaos then runs against.
    pub async fn start_campaign_and_rollout(&mut self) -> anyhow::Result<()> {
        let workload = &self.workload;
        apply(
            &Api::<flotilla_crds::Campaign>::namespaced(self.client.clone(), NEWS),
            CAMPAIGN,
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Campaign",
                "metadata": {"name": CAMPAIGN, "namespace": NEWS},
                "spec": {
                    "audience": {"selector": {"matchLabels": {AUDIENCE_LABEL: "yes"}},
                                 "holdoutPercent": workload.holdout_percent},
                    "channels": {"names": ["hook"]},
                    "message": {"subject": "News", "body": "Hello {{ subscription.contact.name }}"},
                    "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
                    "schedule": {"startAt": "2020-01-01T00:00:00Z"},
                    "throttle": {"messagesPerMinute": workload.messages_per_minute},
                },
            }),
        )
        .await?;
        apply(
            &Api::<flotilla_crds::FirmwareRollout>::namespaced(self.client.clone(), FLEET),
            ROLLOUT,
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
                "metadata": {"name": ROLLOUT, "namespace": FLEET},
                "spec": {
                    "release": "fw-2-0-0",
                    "selector": {"matchLabels": {"flotilla.dev/simulated": "chaos"}},
                    "waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
                    "maxInFlight": workload.max_in_flight,
                    "soakTime": "300ms",
                    "deviceTimeout": "2m",
                    "offlineAfter": "1m",
                    // Wait: a device whose first report the operator has not seen yet when
                    // the plan is fixed is waited for, not left out as never seen.
                    "offlinePolicy": "Wait",
                    "retries": {"limit": 0, "initialBackoff": "1s", "maxBackoff": "1s"},
                },
            }),
        )
        .await?;
        self.sampler = Some(Sampler::start(Api::namespaced(self.client.clone(), FLEET)));
        Ok(())
    }

    /// Creates the tenant Subscriptions of the chaos phase.
    pub async fn create_late_tenants(&self) -> anyhow::Result<()> {
        for name in self.workload.late_tenant_names() {
            self.apply_tenant(&name, false).await?;
        }
        Ok(())
    }

    /// Deletes the doomed Subscriptions (their namespaces go with them: deletionPolicy
    /// Delete).
    pub async fn delete_doomed(&self) -> anyhow::Result<()> {
        for name in self.workload.doomed_names() {
            self.subscriptions()
                .delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting Subscription {name}"))?;
        }
        Ok(())
    }

    /// Every Subscription.
    pub fn subscriptions(&self) -> Api<Subscription> {
        Api::all(self.client.clone())
    }

    /// The webhook deliveries received so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().expect("receiver lock").clone()
    }

    async fn apply_tenant(&self, name: &str, audience: bool) -> anyhow::Result<()> {
        let namespaces = vec![format!("{name}-prod"), format!("{name}-dev")];
        let object = subscription(name, "chaos-tenant", namespaces, audience, false);
        apply(&self.subscriptions(), name, object).await
    }

    async fn start_fleet(&mut self) -> anyhow::Result<()> {
        let spec = FleetSpec {
            gateway_url: self.gateway_url.clone(),
            namespace: FLEET.to_owned(),
            devices: self.workload.devices,
            name_prefix: "chaos-".into(),
            models: vec![
                ModelShare {
                    model: "alpha".into(),
                    share: 1,
                },
                ModelShare {
                    model: "beta".into(),
                    share: 1,
                },
            ],
            starting_version: "1.0.0".into(),
            update_duration: Duration::from_millis(600),
            progress_steps: 1,
            ..FleetSpec::default()
        };
        flotilla_simulator::provision(&self.client, &spec)
            .await
            .context("provisioning the fleet")?;
        self.simulation = Some(flotilla_simulator::start(spec, self.shutdown.clone())?);
        let devices: Api<Device> = Api::namespaced(self.client.clone(), FLEET);
        let expected = self.workload.devices;
        wait_for("every device to report", SETUP, || async {
            let list = devices.list(&ListParams::default()).await.ok()?;
            (list.items.len() == expected
                && list
                    .items
                    .iter()
                    .all(|d| d.status.as_ref().is_some_and(|s| s.last_seen.is_some())))
            .then_some(())
        })
        .await?;
        Ok(())
    }
}

/// A Subscription, Active and paid up.
fn subscription(
    name: &str,
    plan: &str,
    namespaces: Vec<String>,
    audience: bool,
    opted_out: bool,
) -> serde_json::Value {
    let mut contact = json!({"name": name, "email": format!("{name}@example.com")});
    if opted_out {
        contact["optedOut"] = json!(true);
    }
    let mut spec = json!({
        "plan": plan,
        "owners": [{"kind": "User", "name": format!("{name}@example.com")},
                   {"kind": "Group", "name": format!("{name}-admins")}],
        "contact": contact,
        "state": "Active",
        "payment": {"state": "Current"},
        "trial": false,
        "deletionPolicy": "Delete",
    });
    if !namespaces.is_empty() {
        spec["namespaces"] = json!(namespaces);
    }
    json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
        "metadata": {"name": name, "labels": {AUDIENCE_LABEL: if audience { "yes" } else { "no" }}},
        "spec": spec,
    })
}

/// Server-side applies `object` as the harness.
async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("applying {name}"))?;
    Ok(())
}

/// The device gateway for [`FLEET`], as its ServiceAccount; its URL.
async fn start_gateway(sandbox: &Sandbox, shutdown: &Shutdown) -> anyhow::Result<String> {
    // `rbac::install` applied the gateway's Role and RoleBinding in FLEET.
    let client = Client::try_from(rbac::service_account_kube_config(
        sandbox,
        rbac::GATEWAY_SERVICE_ACCOUNT,
    ))?;
    let gateway = flotilla_gateway::start(
        GatewayConfig::loopback(FLEET).polling_every_second(),
        client,
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await?;
    let url = format!("http://{}", gateway.address);
    tokio::spawn(gateway.wait());
    Ok(url)
}

/// A webhook receiver in this process; every delivery lands in `deliveries`.
async fn receiver_url(deliveries: Arc<Mutex<Vec<Delivery>>>) -> anyhow::Result<String> {
    let app = axum::Router::new().fallback(
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let deliveries = deliveries.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let email = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|b| b["recipient"]["email"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                deliveries
                    .lock()
                    .expect("receiver lock")
                    .push(Delivery { key, email });
                "ok"
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Lists the fleet's Devices every 100 ms and keeps the most found in flight at once.
pub(crate) struct Sampler {
    most: Arc<AtomicU32>,
    samples: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(api: Api<Device>) -> Self {
        let most = Arc::new(AtomicU32::new(0));
        let samples = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (most, samples, stop) = (most.clone(), samples.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(list) = api.list(&ListParams::default()).await {
                        let now = Timestamp::now();
                        let in_flight = flotilla_testkit::chaos::in_flight(
                            &list.items,
                            ROLLOUT,
                            TARGET_VERSION,
                            SOAK,
                            now,
                        );
                        most.fetch_max(in_flight, Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self {
            most,
            samples,
            stop,
            task,
        }
    }

    /// Stops sampling; the most in flight seen and the number of samples.
    pub(crate) async fn finish(self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.most.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}
