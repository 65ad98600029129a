//! The gateway against the sandbox API server, driven over HTTP as a device agent drives it.

mod common;

use std::time::Duration;

use common::fixture::*;
use flotilla_crds::device::UpdateState;
use flotilla_crds::{Device, DevicePhase};
use flotilla_gateway::{ENROLLED_BY_ANNOTATION, GatewayConfig, RateLimit};
use flotilla_runtime::testing::wait_for;
use flotilla_sandbox::Verb;
use jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

#[tokio::test]
async fn an_update_from_poll_to_success() {
    let f = start().await;
    // Idle: long sleep, only asked for attributes.
    let (code, idle) = f.get("sensor-1", "").await;
    assert_eq!(code, 200);
    assert_eq!(idle["config"]["polling"]["sleep"], "00:30:00");
    assert!(idle["_links"].get("deploymentBase").is_none(), "{idle}");
    assert!(
        idle["_links"]["configData"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/fleet/controller/v1/sensor-1/configData")
    );
    let seen = f
        .status_until("sensor-1", "first contact recorded", |d| {
            d.status.as_ref().is_some_and(|s| s.last_seen.is_some())
        })
        .await;
    assert_eq!(seen.status.unwrap().phase, Some(DevicePhase::Online));

    f.assign("sensor-1", 7).await;
    let reply = f
        .poll_until("sensor-1", "the deployment offered", |b| {
            b["_links"].get("deploymentBase").is_some()
        })
        .await;
    assert_eq!(reply["config"]["polling"]["sleep"], "00:00:30");
    let href = reply["_links"]["deploymentBase"]["href"].as_str().unwrap();
    assert!(
        href.contains("/fleet/controller/v1/sensor-1/deploymentBase/7?c="),
        "{href}"
    );

    let rest = &href[href.find("/deploymentBase").unwrap()..];
    let response = f
        .http
        .get(f.url("sensor-1", rest))
        .header(
            "Authorization",
            format!("TargetToken {}", token("sensor-1")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let deployment: Value = response.json().await.unwrap();
    assert_eq!(deployment["id"], "7");
    let artifact = &deployment["deployment"]["chunks"][0]["artifacts"][0];
    assert_eq!(artifact["hashes"]["sha256"], SHA);
    assert_eq!(artifact["size"], 4096);
    assert_eq!(
        artifact["_links"]["download"]["href"],
        "https://fw.example.com/sensor/2.4.1.bin"
    );
    let cached = f
        .http
        .get(f.url("sensor-1", rest))
        .header(
            "Authorization",
            format!("TargetToken {}", token("sensor-1")),
        )
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);

    let progress = json!({"execution": "proceeding", "result": {"finished": "none", "progress": {"cnt": 1, "of": 2}}});
    assert_eq!(f.feedback("sensor-1", 7, progress.clone()).await, 200);
    let downloading = f
        .status_until("sensor-1", "downloading", |d| {
            state(d) == Some(UpdateState::Downloading)
        })
        .await;
    let update = downloading.status.as_ref().unwrap().update.clone().unwrap();
    assert_eq!((update.progress, update.action_id), (Some(50), Some(7)));

    // The same report again writes nothing, right away or after the cache caught up.
    let writes = f.status_writes();
    assert_eq!(f.feedback("sensor-1", 7, progress.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.feedback("sensor-1", 7, progress).await, 200);
    assert_eq!(
        f.status_writes(),
        writes,
        "a repeated report is not written"
    );

    assert_eq!(
        f.feedback(
            "sensor-1",
            7,
            json!({"execution": "closed", "result": {"finished": "success"}})
        )
        .await,
        200
    );
    let done = f
        .status_until("sensor-1", "succeeded", |d| {
            state(d) == Some(UpdateState::Succeeded)
        })
        .await;
    let status = done.status.unwrap();
    assert_eq!(status.current_version.as_deref(), Some("2.4.1"));
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].rollout.as_deref(), Some("spring"));
    // Closed: further reports are gone, and the device is idle again.
    assert_eq!(
        f.feedback(
            "sensor-1",
            7,
            json!({"execution": "closed", "result": {"finished": "success"}})
        )
        .await,
        410
    );
    let idle = f
        .poll_until("sensor-1", "idle after success", |b| {
            b["_links"].get("deploymentBase").is_none()
        })
        .await;
    assert_eq!(idle["config"]["polling"]["sleep"], "00:30:00");

    // The poll reply has an ETag too.
    let response = f
        .http
        .get(f.url("sensor-1", ""))
        .header(
            "Authorization",
            format!("TargetToken {}", token("sensor-1")),
        )
        .send()
        .await
        .unwrap();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let again = f
        .http
        .get(f.url("sensor-1", ""))
        .header(
            "Authorization",
            format!("TargetToken {}", token("sensor-1")),
        )
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let metrics = reqwest::get(format!("{}/metrics", f.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"flotilla_gateway_requests_total{code="410",route="deploymentBase/feedback"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("flotilla_gateway_status_writes_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failure_keeps_the_devices_code_and_older_actions_are_ignored() {
    let f = start().await;
    f.assign("sensor-1", 7).await;
    f.poll_until("sensor-1", "offered", |b| {
        b["_links"].get("deploymentBase").is_some()
    })
    .await;
    assert_eq!(
        f.feedback(
            "sensor-1",
            7,
            json!({"execution": "closed", "result": {"finished": "failure"}, "code": 17,
                   "details": ["bad signature"]})
        )
        .await,
        200
    );
    let failed = f
        .status_until("sensor-1", "failed", |d| {
            state(d) == Some(UpdateState::Failed)
        })
        .await;
    let error = failed.status.unwrap().update.unwrap().error.unwrap();
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("17", "bad signature")
    );

    // A new attempt; a late report about the old one changes nothing.
    f.assign("sensor-1", 9).await;
    f.poll_until("sensor-1", "the new attempt", |b| {
        b["_links"]["deploymentBase"]["href"]
            .as_str()
            .is_some_and(|h| h.contains("/deploymentBase/9"))
    })
    .await;
    let writes = f.status_writes();
    let before = f.device("sensor-1").await.status;
    assert_eq!(
        f.feedback("sensor-1", 3, json!({"execution": "proceeding"}))
            .await,
        410
    );
    assert_eq!(
        f.feedback("sensor-1", 10, json!({"execution": "proceeding"}))
            .await,
        404
    );
    assert_eq!(f.status_writes(), writes);
    assert_eq!(f.device("sensor-1").await.status, before);
    let (code, _) = f.get("sensor-1", "/deploymentBase/7").await;
    assert_eq!(code, 404, "only the desired action's deployment is served");
}

#[tokio::test]
async fn tokens_are_per_device() {
    let f = start().await;
    let (code, body) = f.get_as("sensor-1", "", "wrong").await;
    assert_eq!(code, 401);
    assert_eq!(
        body["errorCode"],
        "hawkbit.server.error.rest.authentication"
    );
    // Another device's valid token opens nothing of this one.
    assert_eq!(f.get_as("sensor-1", "", &token("sensor-2")).await.0, 401);
    let before = f.device("sensor-1").await.status;
    let (code, _) = f
        .send_raw(
            reqwest::Method::PUT,
            "sensor-1",
            "/configData",
            &token("sensor-2"),
            br#"{"data": {"serial": "stolen"}}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 401);
    assert_eq!(f.device("sensor-1").await.status, before);
    // Unknown devices and missing headers look the same.
    assert_eq!(f.get_as("sensor-9", "", &token("sensor-9")).await.0, 401);
    let missing = f.http.get(f.url("sensor-1", "")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    // The hash may carry a trailing newline (`sha256sum` output).
    assert_eq!(f.get("sensor-2", "").await.0, 200);
    assert_eq!(
        f.status_writes(),
        1,
        "only sensor-2's first contact was written"
    );
}

#[tokio::test]
async fn a_rotated_or_revoked_token_takes_effect_from_the_watch() {
    let f = start().await;
    assert_eq!(f.get("sensor-1", "").await.0, 200);
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(f.client.clone(), NS);
    let rotated = flotilla_gateway::auth::token_hash_hex("sensor-1-rotated");
    secrets
        .patch(
            "device-tokens",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"sensor-1": rotated}, "data": {"sensor-2": null}})),
        )
        .await
        .expect("rotate sensor-1, revoke sensor-2");
    wait_for("the old token refused", WAIT, || async {
        (f.get("sensor-1", "").await.0 == 401).then_some(())
    })
    .await
    .expect("the old token refused");
    assert_eq!(f.get_as("sensor-1", "", "sensor-1-rotated").await.0, 200);
    assert_eq!(f.get("sensor-2", "").await.0, 401, "its key was removed");
    secrets
        .delete("device-tokens", &Default::default())
        .await
        .expect("delete the Secret");
    wait_for("every token refused", WAIT, || async {
        (f.get_as("sensor-1", "", "sensor-1-rotated").await.0 == 401).then_some(())
    })
    .await
    .expect("every token refused");
}

#[tokio::test]
async fn bodies_are_limited_and_must_be_json() {
    let f = start().await;
    let huge = format!(r#"{{"data": {{"k": "{}"}}}}"#, "x".repeat(70 * 1024));
    let (code, body) = f
        .send_raw(
            reqwest::Method::PUT,
            "sensor-1",
            "/configData",
            &token("sensor-1"),
            huge.into_bytes(),
        )
        .await;
    assert_eq!(code, 413);
    assert_eq!(body["errorCode"], "hawkbit.server.error.rest.body.tooLarge");
    let (code, body) = f
        .send_raw(
            reqwest::Method::PUT,
            "sensor-1",
            "/configData",
            &token("sensor-1"),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        body["errorCode"],
        "hawkbit.server.error.rest.body.notReadable"
    );
    let (code, _) = f
        .send(
            reqwest::Method::PUT,
            "sensor-1",
            "/configData",
            &json!({"data": {"": "x"}}),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(f.status_writes(), 0);

    let (code, _) = f
        .send(
            reqwest::Method::PUT,
            "sensor-1",
            "/configData",
            &json!({"mode": "merge", "data": {"hwRevision": "C", "serial": "SN-1"}}),
        )
        .await;
    assert_eq!(code, 200);
    let reported = f
        .status_until("sensor-1", "attributes", |d| {
            d.status.as_ref().is_some_and(|s| !s.attributes.is_empty())
        })
        .await;
    assert_eq!(reported.status.unwrap().attributes["serial"], "SN-1");
    f.poll_until("sensor-1", "no more configData link", |b| {
        b.get("_links")
            .is_none_or(|l| l.get("configData").is_none())
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_action_is_offered_until_confirmed() {
    let f = start().await;
    f.assign("sensor-1", 7).await;
    f.poll_until("sensor-1", "offered", |b| {
        b["_links"].get("deploymentBase").is_some()
    })
    .await;
    assert_eq!(
        f.feedback("sensor-1", 7, json!({"execution": "download"}))
            .await,
        200
    );
    f.status_until("sensor-1", "downloading", |d| {
        state(d) == Some(UpdateState::Downloading)
    })
    .await;
    // Reassigned (say, a rollback picked another attempt): the running one is cancelled first.
    f.assign("sensor-1", 8).await;
    let reply = f
        .poll_until("sensor-1", "the cancel offered", |b| {
            b["_links"].get("cancelAction").is_some()
        })
        .await;
    assert!(reply["_links"].get("deploymentBase").is_none());
    assert!(
        reply["_links"]["cancelAction"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/cancelAction/7")
    );
    let (code, cancel) = f.get("sensor-1", "/cancelAction/7").await;
    assert_eq!(code, 200);
    assert_eq!(cancel, json!({"id": "7", "cancelAction": {"stopId": "7"}}));
    assert_eq!(f.get("sensor-1", "/cancelAction/8").await.0, 404);
    let (code, _) = f
        .send(
            reqwest::Method::POST,
            "sensor-1",
            "/cancelAction/7/feedback",
            &json!({"id": "7", "status": {"execution": "closed", "result": {"finished": "success"}}}),
        )
        .await;
    assert_eq!(code, 200);
    let cancelled = f
        .status_until("sensor-1", "cancelled", |d| {
            state(d) == Some(UpdateState::Cancelled)
        })
        .await;
    assert_eq!(
        cancelled.status.unwrap().history[0].result,
        UpdateState::Cancelled
    );
    f.poll_until("sensor-1", "the new action offered", |b| {
        b["_links"]["deploymentBase"]["href"]
            .as_str()
            .is_some_and(|h| h.contains("/deploymentBase/8"))
    })
    .await;
}

#[tokio::test]
async fn last_seen_is_written_once_per_resolution() {
    let f = start().await;
    assert_eq!(f.get("sensor-1", "").await.0, 200);
    f.status_until("sensor-1", "first contact", |d| {
        d.status.as_ref().is_some_and(|s| s.last_seen.is_some())
    })
    .await;
    assert_eq!(f.status_writes(), 1);
    for _ in 0..5 {
        assert_eq!(f.get("sensor-1", "").await.0, 200);
    }
    f.clock.advance(SignedDuration::from_secs(299));
    assert_eq!(f.get("sensor-1", "").await.0, 200);
    assert_eq!(f.status_writes(), 1, "within the resolution: no write");
    f.clock.advance(SignedDuration::from_secs(1));
    assert_eq!(f.get("sensor-1", "").await.0, 200);
    assert_eq!(f.status_writes(), 2);
    let seen = f
        .device("sensor-1")
        .await
        .status
        .unwrap()
        .last_seen
        .unwrap()
        .0;
    assert_eq!(seen, "2030-01-01T09:05:00Z".parse::<Timestamp>().unwrap());
}

#[tokio::test]
async fn each_device_has_its_own_rate() {
    let f = start_with(GatewayConfig {
        rate_limit: RateLimit {
            per_minute: 1.try_into().unwrap(),
            burst: 3.try_into().unwrap(),
        },
        ..GatewayConfig::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(f.get("sensor-1", "").await.0, 200);
    }
    let limited = f
        .http
        .get(f.url("sensor-1", ""))
        .header(
            "Authorization",
            format!("TargetToken {}", token("sensor-1")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        f.get("sensor-2", "").await.0,
        200,
        "another device is not limited"
    );
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let f = start().await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", f.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let health = reqwest::get(format!("{}/readyz", f.admin)).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// Every request the gateway sends through polls, a deployment, feedback (with a write conflict,
/// which makes it re-read the Device) and configData is granted by config/rbac/gateway_role.yaml,
/// and every verb the Role grants is one of them.
#[tokio::test]
async fn the_gateways_requests_are_exactly_what_its_role_grants() {
    let f = start().await;
    assert_eq!(f.get("sensor-1", "").await.0, 200);
    // Enrollment creates a Device.
    assert_eq!(f.get_gateway("enrolled-1", "", FLEET_TOKEN).await.0, 200);
    let (code, _) = f
        .send(
            reqwest::Method::PUT,
            "sensor-1",
            "/configData",
            &json!({"mode": "merge", "data": {"serial": "SN-1"}}),
        )
        .await;
    assert_eq!(code, 200);
    f.assign("sensor-1", 7).await;
    let reply = f
        .poll_until("sensor-1", "the deployment offered", |b| {
            b["_links"].get("deploymentBase").is_some()
        })
        .await;
    let href = reply["_links"]["deploymentBase"]["href"].as_str().unwrap();
    let rest = &href[href.find("/deploymentBase").unwrap()..];
    assert_eq!(f.get("sensor-1", rest).await.0, 200);
    let progress = json!({"execution": "proceeding", "result": {"finished": "none"}});
    assert_eq!(f.feedback("sensor-1", 7, progress).await, 200);
    // One conflict: the gateway re-reads the Device (`get devices`) and applies again.
    f.sandbox.faults().inject(
        flotilla_sandbox::FaultRule::new(Verb::Patch, "devices")
            .subresource("status")
            .namespace(NS)
            .status(409),
    );
    let done = json!({"execution": "closed", "result": {"finished": "success"}});
    assert_eq!(f.feedback("sensor-1", 7, done).await, 200);
    f.status_until("sensor-1", "succeeded", |d| {
        state(d) == Some(UpdateState::Succeeded)
    })
    .await;

    let sent: Vec<_> = f
        .sandbox
        .requests()
        .snapshot()
        .into_iter()
        .filter(|r| r.user_agent == GATEWAY_USER_AGENT)
        .collect();
    assert!(
        sent.iter()
            .any(|r| r.verb == Verb::Get && r.resource == "devices"),
        "the conflict made the gateway re-read the Device"
    );
    let (denied, unused) = common::rbac::check(&sent, &common::rbac::gateway_rules());
    assert!(
        denied.is_empty(),
        "gateway_role.yaml does not grant {denied:?}"
    );
    assert!(
        unused.is_empty(),
        "gateway_role.yaml grants {unused:?}, which the gateway never used"
    );
    // By the sandbox's RBAC evaluator, with the gateway's ServiceAccount and namespace: each
    // verb of each rule, taken out alone, would have refused one of these requests.
    let unneeded = flotilla_testkit::rbac::unneeded(
        &f.sandbox.requests().snapshot(),
        &flotilla_testkit::rbac::gateway_user(),
        |_, _| true,
    );
    assert!(
        unneeded.is_empty(),
        "gateway_role.yaml grants the gateway did not need: {unneeded:#?}"
    );
}

async fn try_device(f: &Fixture, name: &str) -> Option<Device> {
    Api::<Device>::namespaced(f.client.clone(), NS)
        .get_opt(name)
        .await
        .expect("get")
}

#[tokio::test]
async fn a_gateway_token_enrolls_an_unapproved_device_that_gets_updates_once_approved() {
    let f = start().await;
    let (code, reply) = f.get_gateway("sensor-new", "", FLEET_TOKEN).await;
    assert_eq!(code, 200, "{reply}");
    // Polled again at once, before the watch delivers it: no second create.
    assert_eq!(f.get_gateway("sensor-new", "", FLEET_TOKEN).await.0, 200);
    assert_eq!(f.sandbox.requests().count(Verb::Create, "devices"), 2 + 1);
    assert_eq!(reply["config"]["polling"]["sleep"], "00:30:00");
    assert!(reply["_links"].get("configData").is_some(), "{reply}");
    let enrolled = f.device("sensor-new").await;
    assert!(!enrolled.spec.approved);
    assert_eq!(enrolled.spec.model, "sensor-v2");
    assert_eq!(enrolled.spec.token_secret_ref, None);
    assert_eq!(
        enrolled.metadata.annotations.as_ref().unwrap()[ENROLLED_BY_ANNOTATION],
        "fleet-enrollment"
    );
    // The same token keeps authenticating it; its reports are recorded.
    let (code, _) = f
        .send_raw(
            reqwest::Method::PUT,
            "sensor-new",
            "/configData",
            "unused",
            br#"{"data": {"serial": "SN-9"}}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 401, "a TargetToken does not open an enrolled device");
    let response = f
        .http
        .put(f.url("sensor-new", "/configData"))
        .header("Authorization", format!("GatewayToken {FLEET_TOKEN}"))
        .header("Content-Type", "application/json")
        .body(r#"{"data": {"serial": "SN-9"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Assigned but not approved: answered, never offered the deployment.
    f.assign("sensor-new", 7).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, reply) = f.get_gateway("sensor-new", "", FLEET_TOKEN).await;
    assert_eq!(code, 200);
    assert!(reply["_links"].get("deploymentBase").is_none(), "{reply}");
    assert_eq!(
        f.get_gateway("sensor-new", "/deploymentBase/7", FLEET_TOKEN)
            .await
            .0,
        404
    );

    Api::<Device>::namespaced(f.client.clone(), NS)
        .patch(
            "sensor-new",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"approved": true}})),
        )
        .await
        .expect("approve");
    let offered = wait_for("the deployment offered once approved", WAIT, || async {
        let (code, body) = f.get_gateway("sensor-new", "", FLEET_TOKEN).await;
        (code == 200 && body["_links"].get("deploymentBase").is_some()).then_some(body)
    })
    .await
    .expect("offered");
    assert_eq!(offered["config"]["polling"]["sleep"], "00:00:30");
    assert_eq!(
        f.get_gateway("sensor-new", "/deploymentBase/7", FLEET_TOKEN)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn gateway_tokens_open_only_the_devices_they_enrolled() {
    let f = start().await;
    // A wrong fleet token enrolls nothing.
    assert_eq!(
        f.get_gateway("sensor-x", "", "not-a-fleet-token").await.0,
        401
    );
    assert!(try_device(&f, "sensor-x").await.is_none());
    // Only a poll enrolls.
    assert_eq!(
        f.get_gateway("sensor-y", "/deploymentBase/7", FLEET_TOKEN)
            .await
            .0,
        401
    );
    assert!(try_device(&f, "sensor-y").await.is_none());
    // A controllerId that cannot name a Device.
    let (code, body) = f.get_gateway("Sensor_Z", "", FLEET_TOKEN).await;
    assert_eq!(code, 400, "{body}");

    assert_eq!(f.get_gateway("sensor-new", "", FLEET_TOKEN).await.0, 200);
    // The other fleet's valid token, a wrong one, and another device's TargetToken: 401.
    assert_eq!(
        f.get_gateway("sensor-new", "", OTHER_FLEET_TOKEN).await.0,
        401
    );
    assert_eq!(f.get_gateway("sensor-new", "", "wrong").await.0, 401);
    assert_eq!(f.get_as("sensor-new", "", &token("sensor-1")).await.0, 401);
    // ...and a device with its own TargetToken cannot be opened with a gateway token.
    assert_eq!(f.get_gateway("sensor-1", "", FLEET_TOKEN).await.0, 401);
    assert_eq!(f.get("sensor-1", "").await.0, 200);
    assert_eq!(f.get_gateway("sensor-new", "", FLEET_TOKEN).await.0, 200);
}
