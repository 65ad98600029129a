//! The FirmwareRelease controller against the sandbox, through the real `Controller`.

mod common;

use common::{Harness, WAIT, device, release, rollout};
use flotilla_crds::condition::{find_condition, reasons, types};
use flotilla_crds::{Device, FINALIZER, FirmwareRelease, FirmwareReleasePhase, FirmwareRollout};
use flotilla_runtime::testing::wait_for;
use flotilla_sandbox::Verb;
use kube::api::DeleteParams;

/// Waits until the release `name` satisfies `check`; returns it.
async fn wait_release(
    h: &Harness,
    what: &str,
    name: &str,
    check: impl Fn(&FirmwareRelease) -> bool,
) -> FirmwareRelease {
    let api = h.api::<FirmwareRelease>();
    let found = wait_for(what, WAIT, || {
        let api = api.clone();
        let check = &check;
        async move { api.get(name).await.ok().filter(|r| check(r)) }
    })
    .await;
    match found {
        Ok(release) => release,
        Err(error) => panic!("{error}: {:?}", api.get(name).await),
    }
}

fn phase(release: &FirmwareRelease) -> Option<FirmwareReleasePhase> {
    release.status.as_ref().and_then(|s| s.phase)
}

fn condition<'a>(
    release: &'a FirmwareRelease,
    type_: &str,
) -> Option<&'a flotilla_crds::Condition> {
    release
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, type_))
}

fn devices(release: &FirmwareRelease) -> i64 {
    release.status.as_ref().map_or(-1, |s| s.devices)
}

#[tokio::test]
async fn a_valid_release_becomes_ready() {
    let h = Harness::start().await;
    h.ready().await;
    h.create::<FirmwareRelease>(release("fw-2", "2.0.0")).await;
    let ready = wait_release(&h, "Ready", "fw-2", |r| {
        phase(r) == Some(FirmwareReleasePhase::Ready)
    })
    .await;
    let condition = condition(&ready, types::READY).expect("Ready");
    assert_eq!(condition.status, "True");
    assert_eq!(
        ready.status.as_ref().unwrap().observed_generation,
        ready.metadata.generation
    );
    assert!(
        ready
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_owned())
    );
    h.stop().await;
}

/// The enforcement path, once for real: with `patch firmwarereleases/status` taken out of
/// `config/rbac/role.yaml`, the sandbox refuses the operator's status write with the
/// apiserver's 403 and the release never becomes Ready (every other grant is shown needed from
/// the request log: `the_operator_role_grants_exactly_what_the_ota_controllers_use`).
#[tokio::test]
async fn without_its_status_grant_a_release_is_refused_and_never_ready() {
    use flotilla_testkit::rbac::{grants_of, operator_user};
    let grant = grants_of(&operator_user())
        .into_iter()
        .find(|g| g.to_string() == "patch flotilla.dev/firmwarereleases/status")
        .expect("role.yaml grants the release status");
    let h = Harness::start_without(
        flotilla_ota::Selection {
            release: true,
            rollout: false,
        },
        &grant,
    )
    .await;
    h.ready().await;
    h.create::<FirmwareRelease>(release("fw-2", "2.0.0")).await;
    let refused = wait_for("the status write refused", WAIT, || async {
        let refused = h.operator_denied();
        refused
            .iter()
            .any(|r| r.starts_with("403 patch flotilla.dev/firmwarereleases/status default/fw-2"))
            .then_some(refused)
    })
    .await
    .expect("a 403");
    assert!(
        refused
            .iter()
            .all(|r| r.ends_with(&format!("({})", operator_user()))),
        "{refused:#?}"
    );
    // Its finalizer is granted and set; the status is not.
    wait_release(&h, "the finalizer", "fw-2", |r| {
        r.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.contains(&FINALIZER.to_owned()))
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let fw = h.api::<FirmwareRelease>().get("fw-2").await.unwrap();
    assert_eq!(phase(&fw), None, "{:?}", fw.status);
    assert!(
        h.metric(r#"flotilla_reconcile_errors_total{class="forbidden",controller="release"}"#)
            >= 1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_minimum_above_the_version_is_an_invalid_spec_with_a_warning() {
    let h = Harness::start().await;
    h.ready().await;
    // The schema checks each version's form but cannot compare them.
    let mut invalid = release("fw-bad", "2.0.0");
    invalid["spec"]["minimumFromVersion"] = "3.0.0".into();
    h.create::<FirmwareRelease>(invalid).await;
    let refused = wait_release(&h, "Invalid", "fw-bad", |r| {
        phase(r) == Some(FirmwareReleasePhase::Invalid)
    })
    .await;
    let ready = condition(&refused, types::READY).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reasons::INVALID_SPEC)
    );
    assert!(
        ready.message.contains("spec.minimumFromVersion"),
        "{}",
        ready.message
    );
    let events = wait_for("the InvalidSpec Event", WAIT, || async {
        let events = h.events_about("FirmwareRelease", "fw-bad").await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("InvalidSpec"))
            .then_some(events)
    })
    .await
    .expect("event");
    assert!(events.iter().any(|e| e.type_.as_deref() == Some("Warning")));
    // No error loop: once quiet, nothing more is written.
    h.quiet("release").await;
    let writes = h.served(Verb::Patch, "firmwarereleases/status");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    h.quiet("release").await;
    assert_eq!(h.served(Verb::Patch, "firmwarereleases/status"), writes);
    for class in ["transient", "forbidden", "permanent"] {
        let series =
            format!(r#"flotilla_reconcile_errors_total{{class="{class}",controller="release"}}"#);
        assert_eq!(h.metric(&series), 0.0, "{series}");
    }
    h.stop().await;
}

async fn deletion_is_blocked_until(release_rollout: impl AsyncFnOnce(&Harness)) {
    let h = Harness::start().await;
    h.ready().await;
    h.create::<FirmwareRelease>(release("fw-2", "2.0.0")).await;
    h.create::<FirmwareRollout>(rollout("canary", "fw-2")).await;
    wait_release(&h, "in use", "fw-2", |r| {
        r.status.as_ref().is_some_and(|s| s.rollouts == ["canary"])
    })
    .await;
    h.api::<FirmwareRelease>()
        .delete("fw-2", &DeleteParams::default())
        .await
        .expect("delete");
    let blocked = wait_release(&h, "blocked", "fw-2", |r| {
        phase(r) == Some(FirmwareReleasePhase::Terminating)
    })
    .await;
    let in_use = condition(&blocked, types::IN_USE).expect("InUse");
    assert_eq!(in_use.reason, reasons::DELETION_BLOCKED);
    assert!(in_use.message.ends_with(": canary"), "{}", in_use.message);
    wait_for("the DeletionBlocked Event", WAIT, || async {
        let events = h.events_about("FirmwareRelease", "fw-2").await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("DeletionBlocked"))
            .then_some(())
    })
    .await
    .expect("event");

    release_rollout(&h).await;
    wait_for("the release to be gone", WAIT, || async {
        matches!(h.api::<FirmwareRelease>().get("fw-2").await, Err(kube::Error::Api(e)) if e.code == 404)
            .then_some(())
    })
    .await
    .expect("deleted");
    h.stop().await;
}

#[tokio::test]
async fn deletion_waits_for_a_live_rollout_until_it_is_deleted() {
    deletion_is_blocked_until(async |h: &Harness| {
        h.api::<FirmwareRollout>()
            .delete("canary", &DeleteParams::default())
            .await
            .expect("delete rollout");
    })
    .await;
}

#[tokio::test]
async fn deletion_waits_for_a_live_rollout_until_it_finishes() {
    deletion_is_blocked_until(async |h: &Harness| {
        h.write_status::<FirmwareRollout>("canary", serde_json::json!({"phase": "Progressing"}))
            .await;
        // Still live: the release stays.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        h.quiet("release").await;
        assert!(h.api::<FirmwareRelease>().get("fw-2").await.is_ok());
        h.write_status::<FirmwareRollout>("canary", serde_json::json!({"phase": "Succeeded"}))
            .await;
    })
    .await;
}

#[tokio::test]
async fn the_device_count_follows_current_versions_and_heartbeats_write_nothing() {
    let h = Harness::start().await;
    h.ready().await;
    h.create::<FirmwareRelease>(release("fw-1", "1.0.0")).await;
    h.create::<FirmwareRelease>(release("fw-2", "2.0.0")).await;
    for name in ["d1", "d2", "d3"] {
        h.create::<Device>(device(name)).await;
        h.write_status::<Device>(name, serde_json::json!({"currentVersion": "1.0.0"}))
            .await;
    }
    wait_release(&h, "3 devices on 1.0.0", "fw-1", |r| devices(r) == 3).await;
    wait_release(&h, "fw-2 ready", "fw-2", |r| {
        phase(r) == Some(FirmwareReleasePhase::Ready)
    })
    .await;

    h.write_status::<Device>("d1", serde_json::json!({"currentVersion": "2.0.0"}))
        .await;
    wait_release(&h, "2 devices on 1.0.0", "fw-1", |r| devices(r) == 2).await;
    wait_release(&h, "1 device on 2.0.0", "fw-2", |r| devices(r) == 1).await;

    h.quiet("release").await;
    let writes = h.served(Verb::Patch, "firmwarereleases/status");
    let reconciles = h.metric(r#"flotilla_reconciliations_total{controller="release"}"#);
    // Devices reporting again without a version change, and a change to a version no release
    // publishes: no release is woken, nothing is written.
    for name in ["d1", "d2", "d3"] {
        h.write_status::<Device>(name, serde_json::json!({"bootCount": 5}))
            .await;
    }
    h.create::<Device>(device("d4")).await;
    h.write_status::<Device>("d4", serde_json::json!({"currentVersion": "9.9.9"}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    h.quiet("release").await;
    assert_eq!(h.served(Verb::Patch, "firmwarereleases/status"), writes);
    assert_eq!(
        h.metric(r#"flotilla_reconciliations_total{controller="release"}"#),
        reconciles
    );

    h.api::<Device>()
        .delete("d2", &DeleteParams::default())
        .await
        .expect("delete");
    wait_release(&h, "1 device on 1.0.0", "fw-1", |r| devices(r) == 1).await;
    h.stop().await;
}
