//! The sandbox (enforcing RBAC, with `config/rbac/` applied from its files), the gateway
//! started against it as its own ServiceAccount `flotilla-system/flotilla-gateway`, bound by
//! `gateway_role.yaml` in namespace `fleet` (two Devices with their device tokens, two
//! gateway-token Secrets, one FirmwareRelease), and the requests a device agent sends, as the
//! integration tests drive them. The tests' own client is the admin; a test fails when the
//! sandbox refused the gateway anything.

use std::sync::Arc;
use std::time::Duration;

use flotilla_crds::Device;
use flotilla_crds::device::UpdateState;
use flotilla_gateway::auth::token_hash_hex;
use flotilla_gateway::{GATEWAY_TOKEN_LABEL, GatewayConfig, TOKEN_SECRET_LABEL};
use flotilla_runtime::testing::wait_for;
use flotilla_runtime::{ManualClock, Shutdown};
use flotilla_sandbox::{Sandbox, Verb};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(10);
/// The `User-Agent` of the gateway's API client, so the sandbox's log tells its requests from
/// the test's own.
pub const GATEWAY_USER_AGENT: &str = "flotilla-gateway-under-test";
pub const NS: &str = "fleet";
pub const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

pub struct Fixture {
    pub sandbox: Sandbox,
    /// Set by a test that makes the sandbox refuse the gateway on purpose.
    pub denials_expected: bool,
    pub client: Client,
    pub clock: ManualClock,
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
    pub shutdown: Shutdown,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if !std::thread::panicking() && !self.denials_expected {
            let refused = flotilla_testkit::rbac::denied_for(
                &self.sandbox,
                &flotilla_testkit::rbac::gateway_user(),
            );
            assert!(
                refused.is_empty(),
                "the sandbox refused the gateway requests gateway_role.yaml does not grant: {refused:#?}"
            );
        }
    }
}

/// The fleet token of the `fleet-enrollment` gateway-token Secret.
pub const FLEET_TOKEN: &str = "fleet-token";
/// The fleet token of the `other-enrollment` gateway-token Secret.
pub const OTHER_FLEET_TOKEN: &str = "other-fleet-token";

pub fn token(device: &str) -> String {
    format!("token-of-{device}")
}

pub async fn start() -> Fixture {
    start_with(GatewayConfig::default()).await
}

pub async fn start_with(config: GatewayConfig) -> Fixture {
    // Before the first client: see flotilla_runtime::crypto.
    flotilla_runtime::crypto::use_ring();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "flotilla=debug,kube=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .enforce_rbac()
        .start()
        .await
        .expect("sandbox");
    // config/rbac, which creates the namespaces it names: the gateway's Role is in `fleet`.
    assert_eq!(NS, flotilla_testkit::rbac::GATEWAY_NAMESPACE);
    flotilla_testkit::rbac::install(&sandbox).await;
    let client = Client::try_from(sandbox.kube_config()).expect("client");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "device-tokens", "labels": {TOKEN_SECRET_LABEL: "true"}},
        "stringData": {"sensor-1": token_hash_hex(&token("sensor-1")),
                       "sensor-2": format!("{}\n", token_hash_hex(&token("sensor-2")))},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    // Two fleet enrollment tokens.
    for (name, fleet_token) in [
        ("fleet-enrollment", FLEET_TOKEN),
        ("other-enrollment", OTHER_FLEET_TOKEN),
    ] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {GATEWAY_TOKEN_LABEL: "true"}},
            "stringData": {"tokenHash": token_hash_hex(fleet_token), "model": "sensor-v2"},
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("gateway-token secret");
    }
    for name in ["sensor-1", "sensor-2"] {
        let device: Device = serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
            "metadata": {"name": name},
            "spec": {"model": "sensor-v2", "tokenSecretRef": {"name": "device-tokens", "key": name}},
        }))
        .unwrap();
        Api::<Device>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &device)
            .await
            .expect("device");
    }
    let release: flotilla_crds::FirmwareRelease = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRelease",
        "metadata": {"name": "sensor-2-4-1"},
        "spec": {"version": "2.4.1", "compatibleModels": ["sensor-v2"],
                 "artifact": {"url": "https://fw.example.com/sensor/2.4.1.bin", "sha256": SHA, "sizeBytes": 4096}},
    }))
    .unwrap();
    Api::<flotilla_crds::FirmwareRelease>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &release)
        .await
        .expect("release");

    let clock = ManualClock::new("2030-01-01T09:00:00Z".parse().unwrap());
    let shutdown = Shutdown::new();
    let config = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        namespaces: vec![NS.to_owned()],
        ..config
    };
    let mut gateway_config = flotilla_testkit::rbac::service_account_kube_config(
        &sandbox,
        flotilla_testkit::rbac::GATEWAY_SERVICE_ACCOUNT,
    );
    gateway_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(GATEWAY_USER_AGENT),
    ));
    let gateway = flotilla_gateway::start(
        config,
        Client::try_from(gateway_config).expect("client"),
        Arc::new(clock.clone()),
        shutdown.clone(),
    )
    .await
    .expect("gateway starts");
    let base = format!("http://{}", gateway.address);
    let admin = format!("http://{}", gateway.admin_address);
    let readiness = gateway.readiness.clone();
    wait_for("the gateway's caches", WAIT, || {
        let ready = readiness.report().is_ready();
        async move { ready.then_some(()) }
    })
    .await
    .expect("ready");
    tokio::spawn(gateway.wait());
    Fixture {
        sandbox,
        denials_expected: false,
        client,
        clock,
        base,
        admin,
        http: reqwest::Client::new(),
        shutdown,
    }
}

impl Fixture {
    pub fn url(&self, device: &str, rest: &str) -> String {
        format!("{}/{NS}/controller/v1/{device}{rest}", self.base)
    }

    pub async fn get(&self, device: &str, rest: &str) -> (u16, Value) {
        self.get_as(device, rest, &token(device)).await
    }

    pub async fn get_as(&self, device: &str, rest: &str, token: &str) -> (u16, Value) {
        self.get_authorized(device, rest, &format!("TargetToken {token}"))
            .await
    }

    /// A GET with `Authorization: GatewayToken <token>`.
    pub async fn get_gateway(&self, device: &str, rest: &str, token: &str) -> (u16, Value) {
        self.get_authorized(device, rest, &format!("GatewayToken {token}"))
            .await
    }

    pub async fn get_authorized(
        &self,
        device: &str,
        rest: &str,
        authorization: &str,
    ) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(device, rest))
            .header("Authorization", authorization)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        device: &str,
        rest: &str,
        body: &Value,
    ) -> (u16, Value) {
        self.send_raw(
            method,
            device,
            rest,
            &token(device),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        device: &str,
        rest: &str,
        token: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let response = self
            .http
            .request(method, self.url(device, rest))
            .header("Authorization", format!("TargetToken {token}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub async fn feedback(&self, device: &str, action: i64, status: Value) -> u16 {
        self.send(
            reqwest::Method::POST,
            device,
            &format!("/deploymentBase/{action}/feedback"),
            &json!({"id": action.to_string(), "status": status}),
        )
        .await
        .0
    }

    pub fn status_writes(&self) -> usize {
        self.sandbox.requests().count(Verb::Patch, "devices/status")
    }

    pub async fn device(&self, name: &str) -> Device {
        Api::<Device>::namespaced(self.client.clone(), NS)
            .get(name)
            .await
            .expect("device")
    }

    pub async fn assign(&self, name: &str, action: i64) {
        self.set_firmware(
            name,
            json!({"version": "2.4.1", "release": "sensor-2-4-1", "rollout": "spring", "actionId": action}),
        )
        .await;
    }

    pub async fn set_firmware(&self, name: &str, firmware: Value) {
        Api::<Device>::namespaced(self.client.clone(), NS)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"firmware": firmware}})),
            )
            .await
            .expect("assign");
    }

    /// Polls until the reply satisfies `wanted` (the gateway's cache catches up with a write).
    pub async fn poll_until(
        &self,
        name: &str,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(what, WAIT, || async {
            let (code, body) = self.get(name, "").await;
            (code == 200 && wanted(&body)).then_some(body)
        })
        .await
        .expect(what)
    }

    /// Waits until the Device's status satisfies `wanted`.
    pub async fn status_until(
        &self,
        name: &str,
        what: &str,
        wanted: impl Fn(&Device) -> bool,
    ) -> Device {
        wait_for(what, WAIT, || async {
            let device = self.device(name).await;
            wanted(&device).then_some(device)
        })
        .await
        .expect(what)
    }
}

pub fn state(device: &Device) -> Option<UpdateState> {
    device.status.as_ref()?.update.as_ref().map(|u| u.state)
}
