//! The kubectl plugin against the sandbox: its commands, called as library functions with a
//! client and a writer, patch what they say and print what the rollout's status holds; the
//! `kubectl-flotilla` binary (and `flotilla` linked under that name) is the plugin.

use std::process::Command;
use std::time::Duration;

use flotilla::plugin::control::{self, Confirmation};
use flotilla::plugin::rollout_status::{self, StatusOptions};
use flotilla::plugin::{Outcome, fleet};
use flotilla_crds::{Device, FirmwareRollout};
use flotilla_sandbox::{Sandbox, Verb};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const NS: &str = "fleet";
const NAME: &str = "spring-update";

async fn sandbox() -> (Sandbox, Client) {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .expect("sandbox");
    let client = sandbox.client();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .expect("namespace");
    (sandbox, client)
}

fn rollouts(client: &Client) -> Api<FirmwareRollout> {
    Api::namespaced(client.clone(), NS)
}

/// A rollout that needs approval, with `status` written through the status subresource.
async fn create_rollout(client: &Client, status: Value) -> FirmwareRollout {
    let rollout: FirmwareRollout = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
        "metadata": {"name": NAME},
        "spec": {
            "release": "sensor-fw-1-1-0",
            "selector": {"matchLabels": {"flotilla.dev/simulated": "sim"}},
            "waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
            "approval": {"required": true},
        },
    }))
    .unwrap();
    rollouts(client)
        .create(&PostParams::default(), &rollout)
        .await
        .expect("create rollout");
    write_status(client, status).await
}

async fn write_status(client: &Client, status: Value) -> FirmwareRollout {
    rollouts(client)
        .patch_status(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .expect("write status")
}

fn plan_hash() -> String {
    "c0ffee".repeat(10) + "c0ff"
}

fn counts(t: i32, s: i32, f: i32, u: i32, p: i32) -> Value {
    json!({"targeted": t, "succeeded": s, "failed": f, "updating": u, "pending": p, "skipped": 0})
}

fn awaiting_approval() -> Value {
    json!({
        "phase": "AwaitingApproval",
        "currentWave": 0,
        "counts": counts(200, 0, 0, 0, 200),
        "plan": {"hash": plan_hash(), "version": "1.1.0", "targeted": 200,
                 "waves": [{"number": 1, "devices": 20}, {"number": 2, "devices": 80}, {"number": 3, "devices": 100}],
                 "excluded": {"alreadyOnVersion": 4}},
    })
}

fn progressing() -> Value {
    json!({
        "phase": "Progressing",
        "currentWave": 1,
        "counts": counts(200, 12, 2, 6, 180),
        "waves": [{"number": 1, "counts": counts(20, 12, 2, 6, 0), "startedAt": "2030-01-01T09:00:00Z"}],
        "cohorts": [{"model": "sensor-v2", "fromVersion": "1.0.0", "counts": counts(100, 6, 2, 3, 89)}],
        "failureReasons": [{"reason": "1001", "count": 2}],
        "failedDevices": [{"name": "sim-0003", "reason": "1001", "wave": 1}],
        "conditions": [{"type": "Ready", "status": "False", "reason": "Progressing",
                        "message": "wave 1 of 3", "lastTransitionTime": "2030-01-01T09:00:00Z"}],
    })
}

async fn status_text(client: &Client, options: StatusOptions) -> (Outcome, String) {
    let mut out = Vec::new();
    let outcome = rollout_status::status(client, NS, NAME, options, &mut out)
        .await
        .expect("status");
    (outcome, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn status_prints_the_rollout_and_its_plan() {
    let (_sandbox, client) = sandbox().await;
    create_rollout(&client, awaiting_approval()).await;
    let (outcome, text) = status_text(&client, StatusOptions::default()).await;
    assert_eq!(outcome, Outcome::Done);
    assert!(text.starts_with("Name:          spring-update\nNamespace:     fleet\n"));
    assert!(text.contains("Release:       sensor-fw-1-1-0 (version 1.1.0)\n"));
    assert!(text.contains("Phase:         ◷ AwaitingApproval\n"));
    assert!(text.contains(&format!("  Hash:        {}\n", plan_hash())));
    assert!(text.contains("    AlreadyOnVersion  4 "), "{text}");
    assert!(text.contains("rollout approve spring-update -n fleet"));

    write_status(&client, progressing()).await;
    let (_, text) = status_text(&client, StatusOptions::default()).await;
    assert!(text.contains("Wave:          1 of 3\n"), "{text}");
    assert!(text.contains("  sensor-v2  1.0.0  100 "), "{text}");
    assert!(text.contains("  sim-0003  1     1001"), "{text}");
    assert!(!text.contains("Plan:"));

    let mut out = Vec::new();
    let error = rollout_status::status(&client, NS, "nope", StatusOptions::default(), &mut out)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "firmwarerollouts.flotilla.dev \"nope\" not found in namespace \"fleet\""
    );
}

#[tokio::test]
async fn status_watch_reprints_until_the_rollout_finishes() {
    for (last_phase, expected) in [
        ("Succeeded", Outcome::Done),
        ("Failed", Outcome::Unsuccessful),
    ] {
        let (sandbox, client) = sandbox().await;
        create_rollout(&client, awaiting_approval()).await;
        let options = StatusOptions {
            watch: true,
            clear_screen: false,
        };
        let writer = async {
            // Change the rollout once the watch is open, so each change is an event.
            for _ in 0..100 {
                if sandbox.requests().count(Verb::Watch, "firmwarerollouts") > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            write_status(&client, progressing()).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            write_status(
                &client,
                json!({"phase": last_phase, "counts": counts(200, 198, 2, 0, 0)}),
            )
            .await;
        };
        let ((outcome, text), ()) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(status_text(&client, options), writer)
        })
        .await
        .expect("the watch ends when the rollout finishes");
        assert_eq!(outcome, expected, "{last_phase}");
        let screens: Vec<&str> = text.split("\nName:").collect();
        assert!(screens.len() >= 3, "a print per change: {text}");
        assert!(screens[0].contains("AwaitingApproval"));
        assert!(text.contains("Phase:         ◌ Progressing\n"));
        assert!(
            screens.last().unwrap().contains(&format!("{last_phase}\n")),
            "{text}"
        );
        assert!(text.contains("200 of 200 finished"));
    }
}

#[tokio::test]
async fn pause_resume_and_abort_patch_the_spec() {
    let (_sandbox, client) = sandbox().await;
    create_rollout(
        &client,
        json!({"phase": "Paused", "resumeAtPause": "ticket-1"}),
    )
    .await;
    let mut out = Vec::new();

    control::pause(&client, NS, NAME, &mut out).await.unwrap();
    let rollout = rollouts(&client).get(NAME).await.unwrap();
    assert!(rollout.spec.paused);

    control::resume(&client, NS, NAME, &mut out).await.unwrap();
    let rollout = rollouts(&client).get(NAME).await.unwrap();
    assert!(!rollout.spec.paused);
    let token = rollout.spec.resume.clone().expect("a resume token");
    assert_ne!(token, "ticket-1", "differs from status.resumeAtPause");
    assert!(
        token.parse::<jiff::Timestamp>().is_ok(),
        "an RFC 3339 time: {token}"
    );
    control::resume(&client, NS, NAME, &mut out).await.unwrap();
    let again = rollouts(&client).get(NAME).await.unwrap().spec.resume;
    assert_ne!(again.as_deref(), Some(token.as_str()), "each resume is new");

    control::abort(&client, NS, NAME, &mut out).await.unwrap();
    let rollout = rollouts(&client).get(NAME).await.unwrap();
    assert!(rollout.spec.abort);
    assert_eq!(
        rollout.status.unwrap().phase.map(|p| p.as_str()),
        Some("Paused"),
        "the main resource's patches leave status alone"
    );

    assert_eq!(
        String::from_utf8(out).unwrap(),
        "firmwarerollout.flotilla.dev/spring-update paused\n\
         firmwarerollout.flotilla.dev/spring-update resumed\n\
         firmwarerollout.flotilla.dev/spring-update resumed\n\
         firmwarerollout.flotilla.dev/spring-update aborted\n"
    );
    let error = control::pause(&client, NS, "nope", &mut Vec::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("\"nope\" not found"), "{error}");
}

#[tokio::test]
async fn approve_prints_the_plan_then_sets_its_hash() {
    let (_sandbox, client) = sandbox().await;
    create_rollout(&client, json!({"phase": "Pending"})).await;

    let error = control::approve(&client, NS, NAME, Confirmation::Given, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("has no plan yet (phase Pending)"),
        "{error}"
    );

    write_status(&client, awaiting_approval()).await;
    let mut out = Vec::new();
    let error = control::approve(&client, NS, NAME, Confirmation::Unavailable, &mut out)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("pass --yes"), "{error}");
    assert!(
        String::from_utf8(out).unwrap().starts_with("Plan:\n"),
        "the plan is shown before refusing"
    );
    assert_eq!(
        rollouts(&client)
            .get(NAME)
            .await
            .unwrap()
            .spec
            .approved_plan_hash,
        None
    );

    let mut out = Vec::new();
    control::approve(&client, NS, NAME, Confirmation::Given, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(&format!("  Hash:        {}\n", plan_hash())));
    assert!(text.contains("  Targeted:    200\n"));
    assert!(text.ends_with("firmwarerollout.flotilla.dev/spring-update approved\n"));
    assert_eq!(
        rollouts(&client)
            .get(NAME)
            .await
            .unwrap()
            .spec
            .approved_plan_hash,
        Some(plan_hash())
    );

    let mut out = Vec::new();
    control::approve(&client, NS, NAME, Confirmation::Given, &mut out)
        .await
        .unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("is already approved")
    );
}

#[tokio::test]
async fn fleet_versions_counts_every_page_of_devices() {
    let (sandbox, client) = sandbox().await;
    let devices: Api<Device> = Api::namespaced(client.clone(), NS);
    // More than one page of 500.
    futures::stream::iter(0..1100)
        .map(|i| {
            let devices = devices.clone();
            async move {
                let (model, ring) = if i % 4 == 0 {
                    ("gateway-v1", "canary")
                } else {
                    ("sensor-v2", "main")
                };
                let device: Device = serde_json::from_value(json!({
                    "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
                    "metadata": {"name": format!("d-{i:04}"), "labels": {"ring": ring}},
                    "spec": {"model": model},
                }))
                .unwrap();
                devices
                    .create(&PostParams::default(), &device)
                    .await
                    .unwrap();
                let version = if i % 10 == 0 { "1.1.0" } else { "1.0.0" };
                let mut status = json!({"currentVersion": version});
                if i % 100 == 1 {
                    status["phase"] = json!("Offline");
                }
                if i % 100 == 2 {
                    status["update"] = json!({"state": "Failed", "attempt": 1});
                }
                devices
                    .patch_status(
                        &format!("d-{i:04}"),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<()>()
        .await;
    sandbox.requests().reset();

    let mut out = Vec::new();
    fleet::versions(&client, NS, None, &mut out).await.unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\
MODEL       1.0.0  1.1.0  TOTAL  UPDATING  FAILED  OFFLINE
gateway-v1  220    55     275    0         0       0
sensor-v2   770    55     825    0         11      11
TOTAL       990    110    1100   0         11      11
"
    );
    assert_eq!(
        sandbox.requests().count(Verb::List, "devices"),
        3,
        "pages of 500"
    );

    let mut out = Vec::new();
    fleet::versions(&client, NS, Some("ring=canary"), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\nTOTAL       220    55     275 "), "{text}");
    assert!(!text.contains("sensor-v2"));

    let mut out = Vec::new();
    fleet::versions(&client, "default", None, &mut out)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "No devices found.\n");
}

#[test]
fn the_plugin_binary_prints_the_plugin_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_kubectl-flotilla"))
        .arg("--help")
        .output()
        .expect("run kubectl-flotilla");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("Usage: kubectl flotilla"), "{help}");
    assert!(help.contains("rollout") && help.contains("fleet"), "{help}");
    assert!(help.contains("--namespace"), "{help}");
}

#[test]
fn flotilla_linked_as_kubectl_flotilla_is_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("kubectl-flotilla");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_flotilla"), &link).unwrap();
    let output = Command::new(&link)
        .args(["rollout", "--help"])
        .output()
        .expect("run the link");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("Usage: kubectl flotilla rollout"), "{help}");
    assert!(help.contains("approve"), "{help}");

    let output = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("Usage: flotilla"), "{help}");
}

#[tokio::test]
async fn the_binary_uses_the_kubeconfig_flag_and_its_context_namespace() {
    let (sandbox, client) = sandbox().await;
    create_rollout(&client, progressing()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-flotilla"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["rollout", "pause", NAME, "-n", NS])
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "firmwarerollout.flotilla.dev/spring-update paused\n"
    );
    assert!(rollouts(&client).get(NAME).await.unwrap().spec.paused);

    // Without -n: the context's namespace (`default`), where there is no such rollout.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-flotilla"))
        .args(["rollout", "status", NAME])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("not found in namespace \"default\""),
        "{stderr}"
    );
}
