//! The gateway driven by a DDI client Flotilla did not write: the `hawkbit` crate's
//! `ddi::Client` (Collabora's), as an agent built on it polls, downloads, reports and cancels.
//! What it sends and parses must be what the gateway answers, and what it reports must land in
//! the Device's status.

mod common;

use std::time::Duration;

use common::fixture::*;
use flotilla_crds::FirmwareRelease;
use flotilla_crds::device::UpdateState;
use flotilla_runtime::testing::wait_for;
use hawkbit::ddi::{
    Client as DdiClient, ClientAuthorization, Error as DdiError, Execution, Finished, Mode, Type,
};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use sha2::{Digest, Sha256};

const DEVICE: &str = "sensor-1";
const RELEASE: &str = "sensor-2-5-0";
const ARTIFACT_PATH: &str = "/sensor/2.5.0.bin";

fn client(f: &Fixture, device: &str) -> DdiClient {
    DdiClient::new(
        &f.base,
        NS,
        device,
        ClientAuthorization::TargetToken(token(device)),
        None,
        None,
        Some(Duration::from_secs(5)),
    )
    .expect("DDI client")
}

/// Serves `body` at [`ARTIFACT_PATH`] on loopback (the FirmwareRelease's artifact URL, so the
/// client's download proves the link); returns the base URL.
async fn serve_artifact(body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new().route(
        ARTIFACT_PATH,
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// Polls with `client` until `wanted` holds for the reply (the gateway's caches catch up with
/// a spec change).
async fn poll_until(
    client: &DdiClient,
    what: &str,
    wanted: impl Fn(&hawkbit::ddi::Reply) -> bool,
) -> hawkbit::ddi::Reply {
    wait_for(what, WAIT, || async {
        let reply = client.poll().await.expect("poll");
        wanted(&reply).then_some(reply)
    })
    .await
    .expect(what)
}

fn http_status(error: &DdiError) -> Option<u16> {
    match error {
        DdiError::ReqwestError(e) => e.status().map(|s| s.as_u16()),
        _ => None,
    }
}

#[tokio::test]
async fn the_hawkbit_crate_polls_updates_reports_and_cancels() {
    let f = start().await;
    let firmware: Vec<u8> = b"flotilla sensor firmware 2.5.0\n".repeat(300);
    let sha256 = hex::encode(Sha256::digest(&firmware));
    let artifacts = serve_artifact(firmware.clone()).await;
    let release: FirmwareRelease = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRelease",
        "metadata": {"name": RELEASE},
        "spec": {"version": "2.5.0", "compatibleModels": ["sensor-v2"],
                 "artifact": {"url": format!("{artifacts}{ARTIFACT_PATH}"), "sha256": sha256,
                              "sizeBytes": firmware.len()}},
    }))
    .unwrap();
    Api::<FirmwareRelease>::namespaced(f.client.clone(), NS)
        .create(&PostParams::default(), &release)
        .await
        .expect("release");
    let ddi = client(&f, DEVICE);

    // Idle: the long sleep, nothing to install or cancel, asked for its attributes.
    let idle = ddi.poll().await.expect("poll");
    assert_eq!(
        idle.polling_sleep().expect("sleep parses"),
        Duration::from_secs(30 * 60)
    );
    assert!(idle.update().is_none());
    assert!(idle.cancel_action().is_none());
    let config = idle.config_data_request().expect("configData requested");
    config
        .upload(
            Execution::Closed,
            Finished::Success,
            Some(Mode::Merge),
            json!({"serial": "SN-0001", "hwRevision": "C", "bootCount": "4"}),
            vec!["attributes"],
        )
        .await
        .expect("configData accepted");
    let reported = f
        .status_until(DEVICE, "the attributes recorded", |d| {
            d.status.as_ref().is_some_and(|s| !s.attributes.is_empty())
        })
        .await;
    let status = reported.status.unwrap();
    assert_eq!(
        (
            status.attributes["serial"].as_str(),
            status.attributes["hwRevision"].as_str()
        ),
        ("SN-0001", "C")
    );
    assert_eq!(
        status.boot_count,
        Some(4),
        "bootCount follows the attribute"
    );
    poll_until(&ddi, "configData no longer requested", |r| {
        r.config_data_request().is_none()
    })
    .await;

    // Assigned as the rollout controller assigns: the deployment is offered and described.
    f.set_firmware(
        DEVICE,
        json!({"version": "2.5.0", "release": RELEASE, "rollout": "spring", "actionId": 7}),
    )
    .await;
    let offered = poll_until(&ddi, "the deployment offered", |r| r.update().is_some()).await;
    assert_eq!(offered.polling_sleep().unwrap(), Duration::from_secs(30));
    let update = offered
        .update()
        .unwrap()
        .fetch()
        .await
        .expect("deploymentBase");
    assert_eq!(update.action_id(), "7");
    assert_eq!(update.download_type(), Type::Forced);
    assert_eq!(update.update_type(), Type::Forced);
    let chunks: Vec<_> = update.chunks().collect();
    assert_eq!(chunks.len(), 1);
    let chunk = &chunks[0];
    assert_eq!(
        (chunk.part(), chunk.name(), chunk.version()),
        ("os", RELEASE, "2.5.0")
    );
    let files: Vec<_> = chunk.artifacts().collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].filename(), "2.5.0.bin");
    assert_eq!(files[0].size() as usize, firmware.len());
    // The link is the release's URL, and the client checks the release's SHA-256.
    let dir = tempfile::tempdir().unwrap();
    let downloaded = update.download(dir.path()).await.expect("download");
    assert_eq!(downloaded.len(), 1);
    downloaded[0].check_sha256().await.expect("sha256 matches");
    assert_eq!(downloaded[0].sha256().await, sha256);
    assert_eq!(std::fs::read(downloaded[0].file()).unwrap(), firmware);

    update
        .send_feedback_with_progress(
            Execution::Proceeding,
            Finished::None,
            json!({"cnt": 1, "of": 2}),
            vec!["Downloading"],
        )
        .await
        .expect("progress accepted");
    let downloading = f
        .status_until(DEVICE, "downloading", |d| {
            state(d) == Some(UpdateState::Downloading)
        })
        .await;
    let running = downloading.status.unwrap().update.unwrap();
    assert_eq!((running.action_id, running.progress), (Some(7), Some(50)));
    update
        .send_feedback(Execution::Closed, Finished::Success, vec!["Installed"])
        .await
        .expect("success accepted");
    let done = f
        .status_until(DEVICE, "succeeded", |d| {
            state(d) == Some(UpdateState::Succeeded)
        })
        .await;
    let status = done.status.unwrap();
    assert_eq!(status.current_version.as_deref(), Some("2.5.0"));
    assert_eq!(status.history.len(), 1);
    let record = &status.history[0];
    assert_eq!(
        (
            record.version.as_str(),
            record.result,
            record.action_id,
            record.rollout.as_deref()
        ),
        ("2.5.0", UpdateState::Succeeded, Some(7), Some("spring"))
    );
    // The action is closed: a repeated report is `410 Gone`, and the device is idle again.
    let again = update
        .send_feedback(Execution::Closed, Finished::Success, vec![])
        .await
        .expect_err("closed");
    assert_eq!(http_status(&again), Some(410), "{again:?}");
    let idle = poll_until(&ddi, "idle after the update", |r| r.update().is_none()).await;
    assert_eq!(idle.polling_sleep().unwrap(), Duration::from_secs(30 * 60));

    // A second action, started, then withdrawn (the rollout aborted): the client sees the
    // cancellation, confirms it, and the Device records it.
    f.assign(DEVICE, 9).await;
    let offered = poll_until(&ddi, "the second action offered", |r| r.update().is_some()).await;
    let second = offered.update().unwrap().fetch().await.expect("deployment");
    assert_eq!(second.action_id(), "9");
    second
        .send_feedback(Execution::Proceeding, Finished::None, vec!["Downloading"])
        .await
        .expect("progress accepted");
    f.status_until(DEVICE, "the second action running", |d| {
        d.status
            .as_ref()
            .and_then(|s| s.update.as_ref())
            .is_some_and(|u| u.action_id == Some(9) && u.state == UpdateState::Downloading)
    })
    .await;
    f.set_firmware(DEVICE, serde_json::Value::Null).await;
    let cancelling = poll_until(&ddi, "the cancel offered", |r| r.cancel_action().is_some()).await;
    assert!(cancelling.update().is_none());
    assert_eq!(cancelling.polling_sleep().unwrap(), Duration::from_secs(30));
    let cancel = cancelling.cancel_action().unwrap();
    assert_eq!(cancel.id().await.expect("cancelAction"), "9");
    cancel
        .send_feedback(Execution::Closed, Finished::Success, vec!["Cancelled"])
        .await
        .expect("cancel confirmed");
    let cancelled = f
        .status_until(DEVICE, "cancelled", |d| {
            state(d) == Some(UpdateState::Cancelled)
        })
        .await;
    let status = cancelled.status.unwrap();
    assert_eq!(status.current_version.as_deref(), Some("2.5.0"));
    assert_eq!(
        (status.history[0].result, status.history[0].action_id),
        (UpdateState::Cancelled, Some(9))
    );
    assert_eq!(status.history.len(), 2);
    let idle = poll_until(&ddi, "idle after the cancel", |r| {
        r.cancel_action().is_none()
    })
    .await;
    assert!(idle.update().is_none());
    assert_eq!(idle.polling_sleep().unwrap(), Duration::from_secs(30 * 60));
}

#[tokio::test]
async fn the_hawkbit_crate_is_refused_without_its_token() {
    let f = start().await;
    let wrong = DdiClient::new(
        &f.base,
        NS,
        DEVICE,
        ClientAuthorization::TargetToken("not-the-token".into()),
        None,
        None,
        None,
    )
    .unwrap();
    let error = wrong.poll().await.expect_err("refused");
    assert_eq!(http_status(&error), Some(401), "{error:?}");
    let enrolling = DdiClient::new(
        &f.base,
        NS,
        "sensor-enrolled",
        ClientAuthorization::GatewayToken(FLEET_TOKEN.into()),
        None,
        None,
        None,
    )
    .unwrap();
    let reply = enrolling.poll().await.expect("a gateway token enrolls");
    assert!(reply.update().is_none());
    assert!(reply.config_data_request().is_some());
}
