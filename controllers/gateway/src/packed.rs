//! The form the Device cache keeps a spec or status in: compact JSON, LZ4-compressed against a
//! dictionary of the Device's own field names and values (`lz4_flex`, pure Rust).
//!
//! A Device that went through an update carries about 900 bytes of spec and status JSON, most
//! of it keys (`"targetVersion"`, `"finishedAt"`...) that every Device repeats: at 100,000
//! Devices that JSON was most of the gateway's memory. Packed, a poll decompresses a few
//! hundred bytes before the JSON decode it already did (the poll rate did not move).

use std::sync::LazyLock;

use flotilla_crds::{DeviceSpec, DeviceStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Serialized samples of a spec and of statuses mid-update, after one, and after a failure: a
/// Device's JSON matches long runs of them. Built from the types, so it names only real fields.
static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let time = "2026-01-01T00:00:00Z";
    let spec: DeviceSpec = serde_json::from_value(json!({
        "model": "model", "approved": false,
        "tokenSecretRef": {"name": "device-tokens", "key": "device"},
        "firmware": {"version": "1.0.0", "release": "release", "rollout": "rollout",
                     "actionId": 1, "attempt": 1, "assignedAt": time,
                     "previous": {"version": "1.0.0", "release": "release"}},
    }))
    .expect("a valid spec");
    let update = |state: &str| {
        json!({"state": state, "actionId": 1, "targetVersion": "1.0.0", "progress": 100,
               "startedAt": time, "finishedAt": time, "attempt": 1})
    };
    let record = |result: &str| {
        json!({"version": "1.0.0", "result": result, "actionId": 1, "rollout": "rollout",
               "startedAt": time, "finishedAt": time})
    };
    let statuses = [
        json!({"phase": "Updating", "currentVersion": "1.0.0", "update": update("Downloading"),
               "lastSeen": time, "bootCount": 1}),
        json!({"phase": "Online", "currentVersion": "1.0.0",
               "update": {"state": "Failed", "error": {"code": "code", "message": "message"}},
               "history": [record("Failed")]}),
        json!({"attributes": {"serial": "serial"}, "bootCount": 1, "currentVersion": "1.0.0",
               "history": [record("Succeeded")], "lastBootAt": time, "lastSeen": time,
               "phase": "Online", "update": update("Succeeded")}),
    ];
    let mut dictionary = serde_json::to_vec(&spec).expect("serializes");
    for status in statuses {
        let status: DeviceStatus = serde_json::from_value(status).expect("a valid status");
        dictionary.extend(serde_json::to_vec(&status).expect("serializes"));
    }
    dictionary
});

/// `value` as compressed compact JSON.
pub fn pack(value: &impl Serialize) -> Box<[u8]> {
    let json = serde_json::to_vec(value).expect("Device specs and statuses serialize");
    lz4_flex::block::compress_prepend_size_with_dict(&json, &DICTIONARY).into_boxed_slice()
}

/// The value [`pack`] packed.
pub fn unpack<T: DeserializeOwned>(packed: &[u8]) -> T {
    let json = lz4_flex::block::decompress_size_prepended_with_dict(packed, &DICTIONARY)
        .expect("the cache holds what pack made");
    serde_json::from_slice(&json).expect("the cache holds JSON serialized from the same type")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Device's spec and status after an update, as the 100,000-device benchmark left them.
    fn updated() -> (DeviceSpec, DeviceStatus) {
        let spec = serde_json::from_value(json!({
            "firmware": {"actionId": 1796414450345_i64, "assignedAt": "2026-12-04T20:00:50Z",
                         "attempt": 1, "previous": {"release": "fw-1-0-0", "version": "1.0.0"},
                         "release": "fw-2-0-0", "rollout": "bench", "version": "2.0.0"},
            "model": "alpha", "tokenSecretRef": {"key": "sim-00000", "name": "sim-tokens-0"}}))
        .unwrap();
        let status = serde_json::from_value(json!({
            "attributes": {"bootCount": "2", "firmwareVersion": "2.0.0",
                           "freeSpaceBytes": "536870912", "hardwareRevision": "alpha-rev3",
                           "serial": "SIM988074218462"},
            "bootCount": 2, "currentVersion": "2.0.0",
            "history": [{"actionId": 1796414450345_i64, "finishedAt": "2026-12-04T20:01:06Z",
                         "result": "Succeeded", "rollout": "bench",
                         "startedAt": "2026-12-04T20:01:03Z", "version": "2.0.0"}],
            "lastBootAt": "2026-12-04T20:01:06Z", "lastSeen": "2026-12-04T20:01:06Z",
            "phase": "Online",
            "update": {"actionId": 1796414450345_i64, "attempt": 1,
                       "finishedAt": "2026-12-04T20:01:06Z", "progress": 100,
                       "startedAt": "2026-12-04T20:01:03Z", "state": "Succeeded",
                       "targetVersion": "2.0.0"}}))
        .unwrap();
        (spec, status)
    }

    #[test]
    fn what_is_packed_unpacks_unchanged() {
        let (spec, status) = updated();
        assert_eq!(unpack::<DeviceSpec>(&pack(&spec)), spec);
        assert_eq!(unpack::<DeviceStatus>(&pack(&status)), status);
        let empty = DeviceStatus::default();
        assert_eq!(unpack::<DeviceStatus>(&pack(&empty)), empty);
    }

    #[test]
    fn an_updated_device_packs_to_well_under_half_its_json() {
        let (spec, status) = updated();
        let json =
            serde_json::to_vec(&spec).unwrap().len() + serde_json::to_vec(&status).unwrap().len();
        let packed = pack(&spec).len() + pack(&status).len();
        assert!(
            packed * 2 < json,
            "{packed} bytes packed from {json} bytes of JSON"
        );
    }
}
