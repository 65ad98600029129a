//! The Argo CD health checks in `config/argocd/health/`, run as Argo CD runs them: each Lua
//! script gets the object as the global `obj` in a VM with only the base, table and package
//! libraries (Argo CD adds a safe `os`, which the scripts do not use) and returns a table with
//! `status` and `message`.
//!
//! The inputs are objects the real controllers wrote to a sandbox API server (read back from
//! the API as Argo CD sees them), plus hand-written statuses for phases that are slow to reach.
//! `config/argocd/argocd-cm-health.yaml` must hold exactly the scripts.

use std::sync::Arc;
use std::time::Duration;

use flotilla::ControllerName;
use flotilla::testing::wait_for;
use flotilla_crds::{
    Campaign, Channel, Device, FirmwareRelease, FirmwareRollout, Plan, Subscription,
};
use flotilla_gateway::ddi::ActionFeedback;
use flotilla_gateway::report;
use flotilla_testkit::{Harness, NAMESPACE, Spawn};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaOptions, LuaSerdeExt, StdLib, Table};
use serde_json::{Value, json};

/// How long a wait for a controller may take.
const WAIT: Duration = Duration::from_secs(30);

/// Kind → script file, in the order of the ConfigMap patch.
const SCRIPTS: [(&str, &str); 7] = [
    ("Plan", "plan.lua"),
    ("Subscription", "subscription.lua"),
    ("FirmwareRelease", "firmwarerelease.lua"),
    ("FirmwareRollout", "firmwarerollout.lua"),
    ("Device", "device.lua"),
    ("Channel", "channel.lua"),
    ("Campaign", "campaign.lua"),
];

fn argocd_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/argocd")
}

fn script(kind: &str) -> String {
    let file = SCRIPTS
        .iter()
        .find(|(k, _)| *k == kind)
        .unwrap_or_else(|| panic!("no script for {kind}"))
        .1;
    std::fs::read_to_string(argocd_dir().join("health").join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// What a script returned.
#[derive(Debug)]
struct Health {
    status: String,
    message: String,
}

/// Runs the health check of `object`'s kind on it, as Argo CD does.
fn health(object: &Value) -> Health {
    let kind = object["kind"].as_str().expect("an object with a kind");
    let source = script(kind);
    // Argo CD's VM (gopher-lua, SkipOpenLibs) loads package, base and table, and a safe os.
    let lua =
        Lua::new_with(StdLib::TABLE | StdLib::PACKAGE, LuaOptions::default()).expect("a Lua VM");
    // JSON null is nil, as in Argo CD's decoding; arrays are plain tables.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    let obj = lua.to_value_with(object, options).expect("obj");
    lua.globals().set("obj", obj).expect("set obj");
    let hs: Table = lua
        .load(&source)
        .set_name(kind)
        .eval()
        .unwrap_or_else(|e| panic!("the {kind} health check failed on {object:#}: {e}"));
    let status: String = hs.get("status").expect("hs.status");
    let message: Option<String> = hs.get("message").expect("hs.message");
    assert!(
        [
            "Healthy",
            "Progressing",
            "Degraded",
            "Suspended",
            "Missing",
            "Unknown"
        ]
        .contains(&status.as_str()),
        "{kind}: {status} is not an Argo CD health status"
    );
    Health {
        status,
        message: message.unwrap_or_default(),
    }
}

/// Asserts the health of `object` is `status` with a message containing `message`.
fn assert_health(object: &Value, status: &str, message: &str) {
    let got = health(object);
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    assert_eq!(
        got.status, status,
        "{} {name}: {got:?}\nstatus: {:#}",
        object["kind"], object["status"]
    );
    assert!(
        got.message.contains(message),
        "{} {name}: message {:?} lacks {message:?}\nstatus: {:#}",
        object["kind"],
        got.message,
        object["status"]
    );
}

/// What kstatus (Flux's health checks, `kubectl wait`; sigs.k8s.io/cli-utils) reports for a
/// custom resource it has no rules for: only a deletion, `observedGeneration` and the
/// `Reconciling` and `Stalled` conditions count.
fn kstatus(object: &Value) -> &'static str {
    if !object["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating";
    }
    let status = &object["status"];
    if let Some(observed) = status["observedGeneration"].as_i64()
        && Some(observed) != object["metadata"]["generation"].as_i64()
    {
        return "InProgress";
    }
    let true_ = |type_: &str| {
        status["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == type_ && c["status"] == "True")
        })
    };
    if true_("Reconciling") {
        "InProgress"
    } else if true_("Stalled") {
        "Failed"
    } else {
        "Current"
    }
}

/// Asserts what kstatus makes of `object` as its controller wrote it.
fn assert_kstatus(object: &Value, expected: &str) {
    assert_eq!(
        kstatus(object),
        expected,
        "kstatus of {} {}: conditions {:#}",
        object["kind"],
        object["metadata"]["name"],
        object["status"]["conditions"]
    );
}

// ---------------------------------------------------------------------------------------------
// The scripts themselves.

#[test]
fn the_argocd_cm_patch_holds_exactly_the_scripts() {
    let text = std::fs::read_to_string(argocd_dir().join("argocd-cm-health.yaml")).unwrap();
    let patch: Value = serde_norway::from_str(&text).expect("YAML");
    assert_eq!(patch["kind"], "ConfigMap");
    assert_eq!(patch["metadata"]["name"], "argocd-cm");
    let data = patch["data"].as_object().expect("data");
    let keys: Vec<String> = SCRIPTS
        .iter()
        .map(|(kind, _)| format!("resource.customizations.health.flotilla.dev_{kind}"))
        .collect();
    assert_eq!(
        data.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        keys.iter().cloned().collect(),
        "one key per kind, nothing else"
    );
    for (kind, file) in SCRIPTS {
        let key = format!("resource.customizations.health.flotilla.dev_{kind}");
        assert_eq!(
            data[&key].as_str(),
            Some(script(kind).as_str()),
            "{key} differs from config/argocd/health/{file}; regenerate the patch"
        );
    }
    // Every Flotilla kind has a check.
    let kinds: std::collections::BTreeSet<String> = flotilla_crds::all_crds()
        .into_iter()
        .map(|crd| crd.spec.names.kind)
        .collect();
    assert_eq!(
        kinds,
        SCRIPTS.iter().map(|(k, _)| (*k).to_owned()).collect(),
        "a script per kind"
    );
}

#[test]
fn the_scripts_stay_within_argo_cds_lua() {
    for (kind, file) in SCRIPTS {
        let source = script(kind);
        // gopher-lua is Lua 5.1, and Argo CD opens no string library for argocd-cm scripts.
        for forbidden in [
            "string.", ":find(", ":sub(", ":format(", ":match(", "goto ", "//", "<const>", "io.",
            "os.", "require",
        ] {
            assert!(
                !source.contains(forbidden),
                "{file} uses {forbidden:?}, which Argo CD's Lua VM does not have"
            );
        }
        // No status at all (just created): Progressing, never an error.
        let bare = json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": kind,
                          "metadata": {"name": "new", "generation": 1}, "spec": {}});
        assert_health(&bare, "Progressing", "");
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written statuses: phases slow to reach, and the generation not yet observed.

fn object(kind: &str, generation: i64, spec: Value, status: Value) -> Value {
    json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "fixture", "namespace": NAMESPACE, "generation": generation},
           "spec": spec, "status": status})
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 1})
}

#[test]
fn a_generation_not_yet_observed_is_progressing_for_every_kind() {
    for (kind, _) in SCRIPTS {
        let stale = object(
            kind,
            3,
            json!({}),
            json!({"phase": "Ready", "observedGeneration": 2,
                   "conditions": [condition("Ready", "True", "Reconciled", "fine")]}),
        );
        if kind == "Device" {
            // The gateway writes no observedGeneration; one that is written is honoured.
            assert_health(&stale, "Progressing", "observe generation 3");
            continue;
        }
        assert_health(
            &stale,
            "Progressing",
            "waiting for the controller to observe generation 3",
        );
    }
}

#[test]
fn rollout_phases_slow_to_reach() {
    let counts = json!({"targeted": 10, "succeeded": 4, "failed": 6, "pending": 0,
                        "updating": 0, "skipped": 0});
    for (phase, health, reason, message) in [
        (
            "Failed",
            "Degraded",
            "Failed",
            "failed: every device in wave 1 failed",
        ),
        (
            "RolledBack",
            "Degraded",
            "RolledBack",
            "every touched device is back on its previous version",
        ),
        ("Aborted", "Degraded", "Aborted", "aborted by spec.abort"),
        (
            "RollingBack",
            "Progressing",
            "RollingBack",
            "rolling back: threshold crossed",
        ),
        (
            "WaitingForWindow",
            "Suspended",
            "WaitingForWindow",
            "outside the maintenance window",
        ),
    ] {
        let ready = if phase == "Failed" {
            condition("Ready", "False", "Failed", message)
        } else {
            condition("Ready", "True", "Reconciled", "the rollout's spec is valid")
        };
        let rollout = object(
            "FirmwareRollout",
            1,
            json!({"release": "fw"}),
            json!({"phase": phase, "observedGeneration": 1, "counts": counts,
                   "conditions": [ready, condition("Progressing", "False", reason, message)]}),
        );
        assert_health(&rollout, health, message);
        if health == "Degraded" {
            assert_health(&rollout, health, "4/10 devices succeeded, 6 failed");
        }
    }
    // Paused by the failure threshold: Degraded, not Suspended.
    let threshold = object(
        "FirmwareRollout",
        1,
        json!({"release": "fw"}),
        json!({"phase": "Paused", "observedGeneration": 1, "counts": counts,
               "conditions": [
                   condition("Ready", "True", "Reconciled", "the rollout's spec is valid"),
                   condition("Progressing", "False", "Paused", "paused by the failure threshold (6 of 10 failed); change spec.resume to go on"),
                   condition("FailureThresholdExceeded", "True", "PausedByFailureThreshold", "6 of 10 failed")]}),
    );
    assert_health(&threshold, "Degraded", "change spec.resume to go on");
    // An invalid spec, whatever the phase.
    let invalid = object(
        "FirmwareRollout",
        1,
        json!({"release": "fw"}),
        json!({"phase": "Pending", "observedGeneration": 1,
               "conditions": [condition("Ready", "False", "InvalidSpec", "spec.waves: must end at 100%")]}),
    );
    assert_health(&invalid, "Degraded", "spec.waves");
}

#[test]
fn campaign_and_channel_phases_slow_to_reach() {
    let campaign = |phase: &str, spec: Value, conditions: Value| {
        object(
            "Campaign",
            1,
            spec,
            json!({"phase": phase, "observedGeneration": 1, "conditions": conditions,
                   "counts": {"targeted": 8, "sent": 0, "failed": 8}}),
        )
    };
    assert_health(
        &campaign(
            "Failed",
            json!({}),
            json!([condition(
                "Ready",
                "False",
                "AllFailed",
                "every message failed; see status.failureReasons"
            )]),
        ),
        "Degraded",
        "every message failed",
    );
    assert_health(
        &campaign(
            "Paused",
            json!({}),
            json!([
                condition(
                    "Ready",
                    "False",
                    "PausedByFailureThreshold",
                    "too many deliveries failed; fix the cause, then set spec.resume to a new value"
                ),
                condition(
                    "FailureThresholdExceeded",
                    "True",
                    "PausedByFailureThreshold",
                    "the failure rate crossed spec.failureThreshold; the campaign is paused"
                )
            ]),
        ),
        "Degraded",
        "too many deliveries failed",
    );
    assert_health(
        &campaign(
            "Paused",
            json!({"suspend": true}),
            json!([condition(
                "Ready",
                "False",
                "PausedByUser",
                "spec.suspend is true; set it to false to resume where it stopped"
            )]),
        ),
        "Suspended",
        "spec.suspend is true",
    );
    assert_health(
        &campaign(
            "Draft",
            json!({}),
            json!([condition(
                "Ready",
                "False",
                "TemplatesInvalid",
                "nothing is sent until this is fixed: spec.message.body: unknown field"
            )]),
        ),
        "Degraded",
        "unknown field",
    );
    assert_health(
        &campaign(
            "Cancelled",
            json!({"cancel": true}),
            json!([condition(
                "Ready",
                "False",
                "Cancelled",
                "cancelled; nothing more is sent"
            )]),
        ),
        "Healthy",
        "cancelled",
    );
    let channel = |breaker: &str, reason: &str, message: &str| {
        object(
            "Channel",
            1,
            json!({"type": "Webhook"}),
            json!({"phase": "Ready", "observedGeneration": 1,
                   "breaker": {"state": breaker, "consecutiveFailures": 5},
                   "conditions": [
                       condition("Ready", "True", "Reconciled", "campaigns can send through this channel"),
                       condition("CircuitClosed", "False", reason, message)]}),
        )
    };
    assert_health(
        &channel("Open", "BreakerOpen", "opened after 5 failures in a row"),
        "Degraded",
        "circuit breaker open: opened after 5 failures",
    );
    assert_health(
        &channel("HalfOpen", "BreakerHalfOpen", "the cool-down passed"),
        "Progressing",
        "half-open",
    );
}

#[test]
fn subscription_plan_and_release_phases_slow_to_reach() {
    let subscription = |phase: &str, ready: Value| {
        object(
            "Subscription",
            1,
            json!({"plan": "team"}),
            json!({"phase": phase, "observedGeneration": 1, "conditions": [ready]}),
        )
    };
    assert_health(
        &subscription(
            "PastDue",
            condition(
                "Ready",
                "True",
                "Reconciled",
                "payment past due since 2026-11-01T00:00:00Z; the tenant is suspended at 2026-11-08T00:00:00Z unless paid",
            ),
        ),
        "Healthy",
        "unless paid",
    );
    assert_health(
        &subscription(
            "Cancelled",
            condition(
                "Ready",
                "False",
                "Cancelled",
                "the subscription is cancelled",
            ),
        ),
        "Healthy",
        "cancelled",
    );
    assert_health(
        &subscription(
            "Cancelling",
            condition("Ready", "False", "Cancelling", "deleting namespaces acme"),
        ),
        "Progressing",
        "deleting",
    );
    assert_health(
        &subscription(
            "Pending",
            condition("Ready", "False", "NotFound", "Plan gold does not exist"),
        ),
        "Degraded",
        "Plan gold does not exist",
    );
    assert_health(
        &subscription(
            "Active",
            condition(
                "Ready",
                "False",
                "NamespaceConflict",
                "namespace acme is owned by another Subscription",
            ),
        ),
        "Degraded",
        "owned by another",
    );
    assert_health(
        &subscription(
            "Active",
            condition(
                "Ready",
                "False",
                "Provisioning",
                "waiting for namespaces acme to finish terminating",
            ),
        ),
        "Progressing",
        "terminating",
    );
    for kind in ["Plan", "FirmwareRelease"] {
        let invalid = object(
            kind,
            1,
            json!({}),
            json!({"phase": "Invalid", "observedGeneration": 1,
                   "conditions": [condition("Ready", "False", "InvalidSpec", "spec.x: must not be empty")]}),
        );
        assert_health(&invalid, "Degraded", "spec.x: must not be empty");
        let terminating = object(
            kind,
            1,
            json!({}),
            json!({"phase": "Terminating", "observedGeneration": 1,
                   "conditions": [condition("Ready", "True", "Reconciled", "valid"),
                                  condition("InUse", "True", "DeletionBlocked", "deletion waits for 1 user: a")]}),
        );
        assert_health(&terminating, "Progressing", "deletion waits for 1 user");
    }
    let offline = object(
        "Device",
        1,
        json!({"model": "alpha"}),
        json!({"phase": "Offline", "currentVersion": "1.0.0", "lastSeen": "2026-12-01T00:00:00Z"}),
    );
    assert_health(&offline, "Degraded", "offline");
}

// ---------------------------------------------------------------------------------------------
// Objects the controllers really write.

fn start(selected: &'static [ControllerName]) -> impl Future<Output = Harness> {
    let spawn: Spawn = Arc::new(move |operator| {
        Box::pin(async move {
            flotilla::run_selected(
                &operator,
                selected,
                flotilla_campaigns::Settings {
                    unsubscribe: Arc::new(|_, id| format!("https://flotilla.example/u/{id}")),
                    flush: flotilla_campaigns::ledger::FlushPolicy {
                        max_unflushed: 20,
                        max_delay: Duration::from_millis(200),
                    },
                },
            )
            .await;
        })
    });
    async move {
        let h = Harness::start(spawn).await;
        h.ready().await;
        h
    }
}

fn api_of<K: Resource<DynamicType = ()>>(h: &Harness, namespaced: bool) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<K>(&());
    if namespaced {
        Api::namespaced_with(h.client.clone(), NAMESPACE, &resource)
    } else {
        Api::all_with(h.client.clone(), &resource)
    }
}

/// Waits until `name` of kind `K`, read from the API as JSON, satisfies `check`; the object.
async fn wait_json<K: Resource<DynamicType = ()>>(
    h: &Harness,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let namespaced = is_namespaced::<K>();
    let api = api_of::<K>(h, namespaced);
    let found = wait_for(format!("{} {name}: {what}", K::kind(&())), WAIT, || {
        let api = api.clone();
        let check = &check;
        async move {
            let object = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            check(&object).then_some(object)
        }
    })
    .await;
    match found {
        Ok(object) => object,
        Err(error) => panic!("{error}: {:#?}", api.get(name).await),
    }
}

/// Whether kind `K` is namespaced, as its CRD says.
fn is_namespaced<K: Resource<DynamicType = ()>>() -> bool {
    let kind = K::kind(&());
    flotilla_crds::all_crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .is_some_and(|crd| crd.spec.scope == "Namespaced")
}

fn phase_is(phase: &'static str) -> impl Fn(&Value) -> bool {
    move |object| object["status"]["phase"] == phase
}

async fn create_cluster<K>(h: &Harness, object: Value)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("valid object");
    Api::<K>::all(h.client.clone())
        .create(&PostParams::default(), &object)
        .await
        .expect("create");
}

fn plan(name: &str) -> Value {
    json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan", "metadata": {"name": name},
           "spec": {"displayName": "Team", "quota": {"hard": {"pods": 20}}, "trialDays": 14,
                    "gracePeriodDays": 7}})
}

fn subscription(name: &str, audience: &str, extra: Value) -> Value {
    let mut spec = json!({
        "plan": "team",
        "owners": [{"kind": "User", "name": format!("{name}@example.com")}],
        "contact": {"name": name, "email": format!("{name}@example.com")},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
           "metadata": {"name": name, "labels": {"audience": audience}}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_and_subscriptions_as_their_controllers_write_them() {
    let h = start(&[ControllerName::Plan, ControllerName::Subscription]).await;
    create_cluster::<Plan>(&h, plan("team")).await;
    let team = wait_json::<Plan>(&h, "team", "Ready", phase_is("Ready")).await;
    assert_health(&team, "Healthy", "the plan is valid");
    assert_kstatus(&team, "Current");

    create_cluster::<Subscription>(&h, subscription("acme", "none", json!({}))).await;
    create_cluster::<Subscription>(
        &h,
        subscription("dormant", "none", json!({"state": "Suspended"})),
    )
    .await;
    let acme = wait_json::<Subscription>(&h, "acme", "Active", phase_is("Active")).await;
    assert_health(&acme, "Healthy", "active on Plan team");
    assert_kstatus(&acme, "Current");
    let dormant =
        wait_json::<Subscription>(&h, "dormant", "Suspended", phase_is("Suspended")).await;
    assert_health(&dormant, "Suspended", "spec.state is Suspended");
    assert_kstatus(&dormant, "Current");
    // The plan now counts its subscribers; still Healthy, and says so.
    let team = wait_json::<Plan>(&h, "team", "in use", |p| p["status"]["subscriptions"] == 2).await;
    assert_health(&team, "Healthy", "referenced by 2 Subscriptions");

    // A payment overdue, within the plan's grace period: PastDue, still Ready.
    let since = jiff::Timestamp::now().to_string();
    create_cluster::<Subscription>(
        &h,
        subscription(
            "late",
            "none",
            json!({"payment": {"state": "PastDue", "since": since}}),
        ),
    )
    .await;
    let late = wait_json::<Subscription>(&h, "late", "PastDue", phase_is("PastDue")).await;
    assert_health(&late, "Healthy", "unless paid");

    // A plan the schema accepts and the controller refuses.
    create_cluster::<Plan>(
        &h,
        json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
               "metadata": {"name": "broken"},
               "spec": {"displayName": "Broken",
                        "limitRange": {"default": {"cpu": "500m"}, "defaultRequest": {"cpu": "3"}}}}),
    )
    .await;
    let broken = wait_json::<Plan>(&h, "broken", "Invalid", phase_is("Invalid")).await;
    assert_health(&broken, "Degraded", "spec.limitRange");
    assert_kstatus(&broken, "Failed");

    // A subscription on a plan that does not exist.
    let mut lost = subscription("lost", "none", json!({}));
    lost["spec"]["plan"] = "gold".into();
    create_cluster::<Subscription>(&h, lost).await;
    let lost = wait_json::<Subscription>(&h, "lost", "PlanFound=False", |s| {
        s["status"]["observedGeneration"] == 1 && s["status"]["phase"] == "Pending"
    })
    .await;
    assert_health(&lost, "Degraded", "Plan gold does not exist");
    assert_kstatus(&lost, "Failed");
    h.stop().await;
}

/// Writes the Device status the gateway computes for `feedback` on the device's current
/// action (as its DDI endpoint does); the Device as read back from the API.
async fn report_feedback(h: &Harness, name: &str, feedback: Value) -> Value {
    let device = h.api::<Device>().get(name).await.unwrap();
    let action_id = device
        .spec
        .firmware
        .as_ref()
        .expect("firmware offered")
        .action_id;
    let feedback: ActionFeedback = serde_json::from_value(feedback).expect("DDI feedback");
    let now = jiff::Timestamp::now();
    let mut status = report::deployment_feedback(&device, action_id, &feedback, now)
        .unwrap_or_else(|refusal| panic!("{name}: {refusal:?}"));
    status.last_seen = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    h.write_status::<Device>(name, serde_json::to_value(status).unwrap())
        .await;
    serde_json::to_value(api_of::<Device>(h, true).get(name).await.unwrap()).unwrap()
}

/// Writes what the gateway writes when the device polls: `lastSeen` now.
async fn poll(h: &Harness, name: &str) {
    let device = h.api::<Device>().get(name).await.unwrap();
    let next = report::contact(&device);
    let status = report::to_write(
        device.status.as_ref(),
        next,
        jiff::Timestamp::now(),
        Duration::ZERO,
    )
    .expect("a poll after the resolution writes lastSeen");
    h.write_status::<Device>(name, serde_json::to_value(status).unwrap())
        .await;
}

/// A Device of model alpha labelled `ring`, reporting 1.0.0 just now (its first poll).
async fn device(h: &Harness, name: &str, ring: &str) {
    let device: Device = h
        .create(
            json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
                       "metadata": {"name": name, "labels": {"ring": ring}},
                       "spec": {"model": "alpha"}}),
        )
        .await;
    let mut status = report::contact(&device);
    status.current_version = Some("1.0.0".into());
    status.last_seen = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    h.write_status::<Device>(name, serde_json::to_value(status).unwrap())
        .await;
}

fn rollout(name: &str, ring: &str, extra: Value) -> Value {
    let mut spec = json!({
        "release": "fw-2-0-0",
        "selector": {"matchLabels": {"ring": ring}},
        "waves": [{"percent": 100}],
        "soakTime": "200ms",
        "retries": {"limit": 0, "initialBackoff": "1s", "maxBackoff": "1s"},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
           "metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn releases_rollouts_and_devices_as_their_controllers_and_the_gateway_write_them() {
    let h = start(&[ControllerName::Release, ControllerName::Rollout]).await;
    h.create::<FirmwareRelease>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRelease",
        "metadata": {"name": "fw-2-0-0"},
        "spec": {"version": "2.0.0", "compatibleModels": ["alpha"],
                 "artifact": {"url": "https://fw.example.com/2.0.0.bin",
                              "sha256": "ab".repeat(32), "sizeBytes": 4096}},
    }))
    .await;
    let release = wait_json::<FirmwareRelease>(&h, "fw-2-0-0", "Ready", phase_is("Ready")).await;
    assert_health(&release, "Healthy", "the release is valid");
    assert_kstatus(&release, "Current");

    for (name, ring) in [
        ("d1", "spring"),
        ("d2", "spring"),
        ("d3", "flaky"),
        ("d4", "held"),
        ("d5", "review"),
    ] {
        device(&h, name, ring).await;
    }
    let d1 = wait_json::<Device>(&h, "d1", "reported", |d| d["status"]["phase"] == "Online").await;
    assert_health(&d1, "Healthy", "runs firmware 1.0.0");

    // Held: paused at creation, and one that waits for approval.
    h.create::<FirmwareRollout>(rollout("held", "held", json!({"paused": true})))
        .await;
    h.create::<FirmwareRollout>(rollout(
        "review",
        "review",
        json!({"approval": {"required": true}}),
    ))
    .await;
    let held = wait_json::<FirmwareRollout>(&h, "held", "Paused", phase_is("Paused")).await;
    assert_health(&held, "Suspended", "paused by spec.paused");
    assert_kstatus(&held, "Current");
    let review = wait_json::<FirmwareRollout>(
        &h,
        "review",
        "AwaitingApproval",
        phase_is("AwaitingApproval"),
    )
    .await;
    assert_health(&review, "Suspended", "set spec.approvedPlanHash to ");
    assert_kstatus(&review, "Current");

    // The spring rollout: both devices update through the gateway's status writes.
    h.create::<FirmwareRollout>(rollout("spring", "spring", json!({})))
        .await;
    for name in ["d1", "d2"] {
        let offered = wait_json::<Device>(&h, name, "offered 2.0.0", |d| {
            d["spec"]["firmware"]["version"] == "2.0.0"
        })
        .await;
        assert_health(
            &offered,
            "Progressing",
            "firmware 2.0.0 offered by rollout spring",
        );
        let updating = report_feedback(
            &h,
            name,
            json!({"status": {"execution": "proceeding",
                              "result": {"finished": "none", "progress": {"cnt": 1, "of": 2}}}}),
        )
        .await;
        assert_eq!(updating["status"]["phase"], "Updating", "{updating:#}");
        assert_health(&updating, "Progressing", "updating to 2.0.0");
    }
    let running = wait_json::<FirmwareRollout>(&h, "spring", "Progressing", |r| {
        r["status"]["phase"] == "Progressing" && r["status"]["counts"]["updating"] == 2
    })
    .await;
    assert_health(&running, "Progressing", "0/2 devices succeeded");
    assert_kstatus(&running, "InProgress");
    for name in ["d1", "d2"] {
        let done = report_feedback(
            &h,
            name,
            json!({"status": {"execution": "closed", "result": {"finished": "success"}}}),
        )
        .await;
        assert_health(&done, "Healthy", "runs firmware 2.0.0");
    }
    // Heard from after the soak (times are whole seconds on the wire): the rollout counts
    // them as succeeded.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for name in ["d1", "d2"] {
        poll(&h, name).await;
    }
    let spring =
        wait_json::<FirmwareRollout>(&h, "spring", "Succeeded", phase_is("Succeeded")).await;
    assert_kstatus(&spring, "Current");
    assert_health(
        &spring,
        "Healthy",
        "every wave completed (2/2 devices succeeded",
    );

    // A device whose update fails.
    h.create::<FirmwareRollout>(rollout("flaky", "flaky", json!({})))
        .await;
    wait_json::<Device>(&h, "d3", "offered 2.0.0", |d| {
        d["spec"]["firmware"]["version"] == "2.0.0"
    })
    .await;
    let failed = report_feedback(
        &h,
        "d3",
        json!({"status": {"execution": "closed", "result": {"finished": "failure"},
                          "code": 17, "details": ["flash write failed"]}}),
    )
    .await;
    assert_health(
        &failed,
        "Degraded",
        "update to 2.0.0 failed (attempt 1): 17: flash write failed",
    );

    // A spec change the controller has not seen yet: the release's generation moves on.
    h.api::<FirmwareRelease>()
        .patch(
            "fw-2-0-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"notes": "now with notes"}})),
        )
        .await
        .unwrap();
    let edited = serde_json::to_value(
        api_of::<FirmwareRelease>(&h, true)
            .get("fw-2-0-0")
            .await
            .unwrap(),
    )
    .unwrap();
    if edited["status"]["observedGeneration"] != edited["metadata"]["generation"] {
        assert_health(
            &edited,
            "Progressing",
            "waiting for the controller to observe generation 2",
        );
    }
    let observed = wait_json::<FirmwareRelease>(&h, "fw-2-0-0", "generation 2 observed", |r| {
        r["status"]["observedGeneration"] == 2
    })
    .await;
    assert_health(&observed, "Healthy", "the release is valid");
    h.stop().await;
}

/// A webhook receiver answering 200 to everything; its URL.
async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn campaign(name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "audience": {"selector": {"matchLabels": {"audience": "launch"}}},
        "channels": {"names": ["hook"]},
        "message": {"subject": "News", "body": "Hello {{ subscription.contact.name }}"},
        "retry": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s"},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": "Campaign",
           "metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channels_and_campaigns_as_their_controllers_write_them() {
    let h = start(&[
        ControllerName::Plan,
        ControllerName::Subscription,
        ControllerName::Channel,
        ControllerName::Campaign,
    ])
    .await;
    let url = receiver().await;
    create_cluster::<Plan>(&h, plan("team")).await;
    for name in ["ada", "grace", "alan"] {
        create_cluster::<Subscription>(&h, subscription(name, "launch", json!({}))).await;
    }
    for name in ["ada", "grace", "alan"] {
        wait_json::<Subscription>(&h, name, "Active", phase_is("Active")).await;
    }

    h.create::<Channel>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel", "metadata": {"name": "hook"},
        "spec": {"type": "Webhook", "webhook": {"url": url}, "timeout": "5s"},
    }))
    .await;
    h.create::<Channel>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel", "metadata": {"name": "signed"},
        "spec": {"type": "Webhook", "timeout": "5s",
                 "webhook": {"url": url, "signingSecretRef": {"name": "missing", "key": "hmac"}}},
    }))
    .await;
    let hook = wait_json::<Channel>(&h, "hook", "Ready", phase_is("Ready")).await;
    assert_health(&hook, "Healthy", "campaigns can send through this channel");
    assert_kstatus(&hook, "Current");
    let signed = wait_json::<Channel>(&h, "signed", "NotReady", phase_is("NotReady")).await;
    assert_health(&signed, "Degraded", "missing");
    assert_kstatus(&signed, "Failed");

    // A one-off campaign, started in the past: sends to all three and completes.
    h.create::<Campaign>(campaign(
        "launch",
        json!({"schedule": {"startAt": "2020-01-01T00:00:00Z"}}),
    ))
    .await;
    // No start time and no trigger: a Draft.
    h.create::<Campaign>(campaign("idea", json!({}))).await;
    // Always on: sends whenever a Subscription becomes PastDue.
    h.create::<Campaign>(campaign(
        "dunning",
        json!({"trigger": {"phaseEntered": "PastDue"}}),
    ))
    .await;
    // Starts next century.
    h.create::<Campaign>(campaign(
        "someday",
        json!({"schedule": {"startAt": "2099-01-01T09:00:00Z"}}),
    ))
    .await;
    // Suspended by the user before it started.
    h.create::<Campaign>(campaign(
        "later",
        json!({"schedule": {"startAt": "2020-01-01T00:00:00Z"}, "suspend": true}),
    ))
    .await;
    // Through a Channel that is not Ready.
    let mut blocked = campaign(
        "blocked",
        json!({"schedule": {"startAt": "2020-01-01T00:00:00Z"}}),
    );
    blocked["spec"]["channels"]["names"] = json!(["signed"]);
    h.create::<Campaign>(blocked).await;

    let launch = wait_json::<Campaign>(&h, "launch", "Completed", phase_is("Completed")).await;
    assert_health(
        &launch,
        "Healthy",
        "every recipient was handled (3/3 sent, 0 failed)",
    );
    assert_kstatus(&launch, "Current");
    let idea = wait_json::<Campaign>(&h, "idea", "Draft", |c| {
        c["status"]["phase"] == "Draft" && c["status"]["observedGeneration"] == 1
    })
    .await;
    assert_health(&idea, "Suspended", "no schedule.startAt and no trigger");
    assert_kstatus(&idea, "Current");
    let dunning = wait_json::<Campaign>(&h, "dunning", "Running", phase_is("Running")).await;
    assert_health(
        &dunning,
        "Healthy",
        "sends to each Subscription as it enters the trigger",
    );
    assert_kstatus(&dunning, "Current");
    let someday = wait_json::<Campaign>(&h, "someday", "Scheduled", phase_is("Scheduled")).await;
    assert_health(&someday, "Progressing", "waiting for schedule.startAt");
    assert_kstatus(&someday, "InProgress");
    let later = wait_json::<Campaign>(&h, "later", "Paused", phase_is("Paused")).await;
    assert_health(&later, "Suspended", "spec.suspend is true");
    assert_kstatus(&later, "Current");
    let blocked = wait_json::<Campaign>(&h, "blocked", "waiting for its Channel", |c| {
        c["status"]["observedGeneration"] == 1
            && c["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "NoChannelReady"))
    })
    .await;
    assert_health(
        &blocked,
        "Degraded",
        "waiting for a Channel to be Ready: signed",
    );
    // Waiting for a Channel, which reports its own Stalled: in progress here.
    assert_kstatus(&blocked, "InProgress");
    h.stop().await;
}
