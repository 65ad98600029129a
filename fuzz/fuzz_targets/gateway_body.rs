//! The gateway's request bodies, from bytes to the Device status they would write: DDI
//! deployment feedback, cancel feedback and `configData`. The first byte picks the endpoint
//! (bits 0–1), the device's state (bits 2–4) and the action id in the path (bits 5–7); the
//! rest is the body. Never a panic; an accepted report stays within the Device schema's
//! limits.
#![no_main]

use flotilla_crds::device::{
    MAX_ATTRIBUTE_KEY_LENGTH, MAX_ATTRIBUTE_VALUE_LENGTH, MAX_ATTRIBUTES, MAX_ERROR_CODE_LENGTH,
    MAX_ERROR_MESSAGE_LENGTH, MAX_HISTORY,
};
use flotilla_crds::{Device, DeviceStatus};
use flotilla_gateway::ddi::{ActionFeedback, ConfigData};
use flotilla_gateway::report;
use flotilla_gateway::server::{action_id, decode_body};
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let device = device((selector >> 2) & 7);
    let action = action_id(&(5 + i64::from(selector >> 5)).to_string()).expect("a number");
    let now = Timestamp::from_second(1_900_000_000).expect("in range");
    let outcome = match selector & 3 {
        0 => decode_body::<ActionFeedback>(body)
            .map(|f| report::deployment_feedback(&device, action, &f, now)),
        1 => decode_body::<ActionFeedback>(body)
            .map(|f| report::cancel_feedback(&device, action, &f, now)),
        _ => decode_body::<ConfigData>(body).map(|d| report::config_data(&device, &d, now)),
    };
    if let Ok(Ok(status)) = outcome {
        within_limits(&status);
        let written = report::to_write(
            device.status.as_ref(),
            status,
            now,
            std::time::Duration::from_secs(60),
        );
        if let Some(status) = written {
            serde_json::to_vec(&status).expect("a status serializes");
        }
    }
});

/// Devices in the states a report meets: new, offered action 7, running 7, running 7 while
/// the spec moved on to 8 (a cancel), finished 7, and near the attribute limit.
fn device(state: u8) -> Device {
    let firmware = |action: i64| json!({"version": "2.4.1", "release": "sensor-2-4-1", "rollout": "spring", "actionId": action});
    let update = |action: i64, state: &str| {
        json!({"actionId": action, "targetVersion": "2.4.1", "state": state, "attempt": 1,
               "startedAt": "2030-01-01T09:00:00Z"})
    };
    let attributes: serde_json::Map<String, serde_json::Value> = (0..MAX_ATTRIBUTES - 1)
        .map(|i| (format!("a{i}"), json!("x")))
        .collect();
    let (spec_firmware, status) = match state {
        0 => (None, json!({})),
        1 => (Some(firmware(7)), json!({"currentVersion": "2.3.0"})),
        2 => (
            Some(firmware(7)),
            json!({"update": update(7, "Downloading")}),
        ),
        3 => (
            Some(firmware(8)),
            json!({"update": update(7, "Installing")}),
        ),
        4 => (Some(firmware(7)), json!({"update": update(7, "Succeeded")})),
        5 => (
            Some(firmware(7)),
            json!({"attributes": attributes, "bootCount": 3}),
        ),
        6 => (Some(firmware(6)), json!({"update": update(5, "Verifying")})),
        _ => (Some(firmware(12)), json!({"update": update(7, "Failed")})),
    };
    let mut spec = json!({"model": "sensor-v2"});
    if let Some(firmware) = spec_firmware {
        spec["firmware"] = firmware;
    }
    serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
        "metadata": {"name": "sensor-0001", "namespace": "fleet"},
        "spec": spec, "status": status,
    }))
    .expect("a valid Device")
}

fn within_limits(status: &DeviceStatus) {
    assert!(status.attributes.len() <= MAX_ATTRIBUTES);
    for (key, value) in &status.attributes {
        assert!((1..=MAX_ATTRIBUTE_KEY_LENGTH).contains(&key.chars().count()));
        assert!(value.chars().count() <= MAX_ATTRIBUTE_VALUE_LENGTH);
    }
    assert!(status.history.len() <= MAX_HISTORY);
    if let Some(update) = &status.update {
        assert!(
            update.progress.is_none_or(|p| (0..=100).contains(&p)),
            "progress {:?}",
            update.progress
        );
        if let Some(error) = &update.error {
            assert!(error.code.chars().count() <= MAX_ERROR_CODE_LENGTH);
            assert!(error.message.chars().count() <= MAX_ERROR_MESSAGE_LENGTH);
        }
    }
}
