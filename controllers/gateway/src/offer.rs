//! What the gateway offers a polling device: a deployment, a cancellation or nothing, decided
//! from the Device alone (its `spec.firmware` and what it last reported), and the DDI replies
//! that carry it. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_crds::FirmwareReleaseSpec;
use flotilla_crds::device::{DesiredFirmware, Device};
use sha2::{Digest, Sha256};

use crate::ddi::{
    ArtifactRef, CancelReply, CancelStop, Chunk, Deployment, DeploymentReply, Handling, Hashes,
    Link, PollConfig, PollReply, Polling, format_sleep,
};

/// `status.update.error.code` of a device that refused to cancel: the cancellation is no
/// longer offered and the device finishes its action (what hawkBit does with a rejected
/// cancel).
pub const CANCEL_REJECTED: &str = "CancelRejected";

/// What a device has to do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work<'a> {
    /// Nothing.
    Idle,
    /// Install `firmware` (its `actionId`).
    Deploy(&'a DesiredFirmware),
    /// Stop the running action `action_id`: spec.firmware moved on (abort, rollback, release
    /// withdrawn, a new attempt).
    Cancel(i64),
}

/// The device's work: a running action the spec no longer asks for is cancelled first; the
/// desired action is offered until the device has finished it.
pub fn work(device: &Device) -> Work<'_> {
    // Not admitted yet (enrolled through a GatewayToken): nothing is offered or cancelled.
    if !device.spec.approved {
        return Work::Idle;
    }
    let desired = device.spec.firmware.as_ref();
    let update = device.status.as_ref().and_then(|s| s.update.as_ref());
    if let Some(update) = update
        && let Some(running) = update.action_id
        && !update.state.is_terminal()
        && desired.map(|f| f.action_id) != Some(running)
        && update.error.as_ref().map(|e| e.code.as_str()) != Some(CANCEL_REJECTED)
    {
        return Work::Cancel(running);
    }
    // A device already running the desired version has nothing to install (a rollback of a
    // device whose update failed before it switched, or a hand assignment of its version).
    let running = device
        .status
        .as_ref()
        .and_then(|s| s.current_version.as_deref());
    match desired {
        Some(firmware) if running == Some(firmware.version.as_str()) => Work::Idle,
        Some(firmware)
            if !update.is_some_and(|u| {
                u.action_id == Some(firmware.action_id) && u.state.is_terminal()
            }) =>
        {
            Work::Deploy(firmware)
        }
        _ => Work::Idle,
    }
}

/// How long devices sleep between polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollingSleep {
    /// While the device has work: it should see progress, cancellations and new attempts soon.
    pub busy: Duration,
    /// When idle: long, so a large idle fleet costs little.
    pub idle: Duration,
}

impl Default for PollingSleep {
    fn default() -> Self {
        Self {
            busy: Duration::from_secs(30),
            idle: Duration::from_secs(30 * 60),
        }
    }
}

/// Where a device's DDI resources live: `{public}/{tenant}/controller/v1/{controllerId}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBase(pub String);

impl DeviceBase {
    pub fn new(public_url: &str, tenant: &str, controller_id: &str) -> Self {
        Self(format!(
            "{}/{tenant}/controller/v1/{controller_id}",
            public_url.trim_end_matches('/')
        ))
    }

    fn link(&self, path: &str) -> Link {
        Link {
            href: format!("{}/{path}", self.0),
        }
    }
}

/// The poll reply. `release` is the FirmwareRelease `spec.firmware` names, if cached: without
/// it there is nothing to download yet, so no `deploymentBase` link (but a short sleep).
pub fn poll_reply(
    device: &Device,
    release: Option<&FirmwareReleaseSpec>,
    base: &DeviceBase,
    sleep: PollingSleep,
) -> PollReply {
    let mut links = BTreeMap::new();
    let busy = match work(device) {
        Work::Idle => device
            .status
            .as_ref()
            .and_then(|s| s.update.as_ref())
            .is_some_and(|u| u.state.is_in_progress()),
        Work::Cancel(action_id) => {
            links.insert(
                "cancelAction".to_owned(),
                base.link(&format!("cancelAction/{action_id}")),
            );
            true
        }
        Work::Deploy(firmware) => {
            if let Some(release) = release {
                let reply = deployment_reply(firmware, release);
                links.insert(
                    "deploymentBase".to_owned(),
                    base.link(&format!(
                        "deploymentBase/{}?c={}",
                        firmware.action_id,
                        content_hash(&reply)
                    )),
                );
            }
            true
        }
    };
    let attributes_reported = device
        .status
        .as_ref()
        .is_some_and(|s| !s.attributes.is_empty());
    if !attributes_reported {
        links.insert("configData".to_owned(), base.link("configData"));
    }
    PollReply {
        config: PollConfig {
            polling: Polling {
                sleep: format_sleep(if busy { sleep.busy } else { sleep.idle }),
            },
        },
        links,
    }
}

/// The deployment of `firmware` from `release`: one chunk, one artifact, forced download and
/// update (a rollout assigns deliberately; it has no "soft" assignments).
pub fn deployment_reply(
    firmware: &DesiredFirmware,
    release: &FirmwareReleaseSpec,
) -> DeploymentReply {
    let url = &release.artifact.url;
    let link_name = if url.starts_with("https:") {
        "download"
    } else {
        "download-http"
    };
    let filename = url
        .split(['?', '#'])
        .next()
        .and_then(|path| path.rsplit('/').next())
        .filter(|name| !name.is_empty())
        .map_or_else(|| format!("{}.bin", firmware.release), str::to_owned);
    DeploymentReply {
        id: firmware.action_id.to_string(),
        deployment: Deployment {
            download: Handling::Forced,
            update: Handling::Forced,
            maintenance_window: None,
            chunks: vec![Chunk {
                part: "os".to_owned(),
                version: release.version.clone(),
                name: firmware.release.clone(),
                artifacts: vec![ArtifactRef {
                    filename,
                    hashes: Hashes {
                        sha1: String::new(),
                        md5: String::new(),
                        sha256: release.artifact.sha256.clone(),
                    },
                    size: release.artifact.size_bytes,
                    links: BTreeMap::from([(link_name.to_owned(), Link { href: url.clone() })]),
                }],
            }],
        },
    }
}

/// The reply to `GET .../cancelAction/{actionId}`.
pub fn cancel_reply(action_id: i64) -> CancelReply {
    CancelReply {
        id: action_id.to_string(),
        cancel_action: CancelStop {
            stop_id: action_id.to_string(),
        },
    }
}

/// A short digest of a reply, for the `c` query parameter (as hawkBit's links carry one, so
/// an agent that caches by URL sees a change).
fn content_hash(reply: &DeploymentReply) -> String {
    let body = serde_json::to_vec(reply).expect("DDI replies serialize");
    hex::encode(&Sha256::digest(&body)[..8])
}

/// The strong ETag of a response body.
pub fn etag(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(body)[..16]))
}

/// Whether an `If-None-Match` header value matches `etag` (`*`, a list, weak or strong).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::DeviceStatus;
    use flotilla_crds::device::{UpdateError, UpdateState, UpdateStatus};
    use serde_json::json;

    pub(crate) fn device(firmware: Option<i64>, update: Option<(i64, UpdateState)>) -> Device {
        let mut spec = json!({"model": "sensor-v2"});
        if let Some(action_id) = firmware {
            spec["firmware"] =
                json!({"version": "2.4.1", "release": "sensor-2-4-1", "actionId": action_id});
        }
        let mut device: Device = serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
            "metadata": {"name": "sensor-0001", "namespace": "fleet"},
            "spec": spec,
        }))
        .unwrap();
        if let Some((action_id, state)) = update {
            device.status = Some(DeviceStatus {
                update: Some(UpdateStatus {
                    state,
                    action_id: Some(action_id),
                    target_version: Some("2.4.1".into()),
                    ..UpdateStatus::default()
                }),
                ..DeviceStatus::default()
            });
        }
        device
    }

    fn release() -> FirmwareReleaseSpec {
        serde_json::from_value(json!({
            "version": "2.4.1",
            "artifact": {"url": "https://fw.example.com/sensor/2.4.1.bin?sig=x",
                         "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                         "sizeBytes": 8_388_608},
            "compatibleModels": ["sensor-v2"],
        }))
        .unwrap()
    }

    #[test]
    fn work_follows_the_spec_and_the_reports() {
        use UpdateState::*;
        assert_eq!(work(&device(None, None)), Work::Idle);
        assert!(matches!(work(&device(Some(5), None)), Work::Deploy(f) if f.action_id == 5));
        assert!(matches!(
            work(&device(Some(5), Some((5, Downloading)))),
            Work::Deploy(_)
        ));
        assert_eq!(work(&device(Some(5), Some((5, Succeeded)))), Work::Idle);
        assert_eq!(work(&device(Some(5), Some((5, Failed)))), Work::Idle);
        // An older finished action does not block the new one.
        assert!(matches!(
            work(&device(Some(6), Some((5, Failed)))),
            Work::Deploy(f) if f.action_id == 6
        ));
        // A running action the spec moved away from is cancelled first.
        assert_eq!(
            work(&device(Some(6), Some((5, UpdateState::Installing)))),
            Work::Cancel(5)
        );
        assert_eq!(work(&device(None, Some((5, Downloading)))), Work::Cancel(5));
        // ...unless the device refused to cancel it.
        let mut refused = device(None, Some((5, Downloading)));
        refused
            .status
            .as_mut()
            .unwrap()
            .update
            .as_mut()
            .unwrap()
            .error = Some(UpdateError {
            code: CANCEL_REJECTED.into(),
            message: String::new(),
        });
        assert_eq!(work(&refused), Work::Idle);
    }

    #[test]
    fn an_unapproved_device_is_offered_nothing() {
        let mut waiting = device(Some(5), None);
        waiting.spec.approved = false;
        assert_eq!(work(&waiting), Work::Idle);
        let base = DeviceBase::new("http://gw", "fleet", "sensor-0001");
        let reply = poll_reply(&waiting, Some(&release()), &base, PollingSleep::default());
        assert!(!reply.links.contains_key("deploymentBase"));
        assert_eq!(reply.config.polling.sleep, "00:30:00");
        waiting.spec.approved = true;
        assert!(matches!(work(&waiting), Work::Deploy(_)));
    }

    #[test]
    fn an_idle_device_sleeps_long_and_is_asked_for_its_attributes() {
        let base = DeviceBase::new("https://gw.example.com/", "fleet", "sensor-0001");
        let reply = poll_reply(&device(None, None), None, &base, PollingSleep::default());
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"config": {"polling": {"sleep": "00:30:00"}},
                   "_links": {"configData": {"href": "https://gw.example.com/fleet/controller/v1/sensor-0001/configData"}}})
        );
        let mut reported = device(None, None);
        reported.status = Some(DeviceStatus {
            attributes: [("serial".to_owned(), "1".to_owned())].into(),
            ..DeviceStatus::default()
        });
        let reply = poll_reply(&reported, None, &base, PollingSleep::default());
        assert!(reply.links.is_empty());
    }

    #[test]
    fn an_assigned_device_gets_the_deployment_link_and_a_short_sleep() {
        let base = DeviceBase::new("http://gw", "fleet", "sensor-0001");
        let reply = poll_reply(
            &device(Some(7), None),
            Some(&release()),
            &base,
            PollingSleep::default(),
        );
        assert_eq!(reply.config.polling.sleep, "00:00:30");
        let href = &reply.links["deploymentBase"].href;
        assert!(
            href.starts_with("http://gw/fleet/controller/v1/sensor-0001/deploymentBase/7?c="),
            "{href}"
        );
        // Not cached yet: nothing to download, but come back soon.
        let reply = poll_reply(&device(Some(7), None), None, &base, PollingSleep::default());
        assert!(!reply.links.contains_key("deploymentBase"));
        assert_eq!(reply.config.polling.sleep, "00:00:30");
        let reply = poll_reply(
            &device(Some(8), Some((7, UpdateState::Installing))),
            Some(&release()),
            &base,
            PollingSleep::default(),
        );
        assert_eq!(
            reply.links["cancelAction"].href,
            "http://gw/fleet/controller/v1/sensor-0001/cancelAction/7"
        );
        assert!(!reply.links.contains_key("deploymentBase"));
    }

    #[test]
    fn the_deployment_is_hawkbits_shape() {
        let firmware = device(Some(7), None).spec.firmware.unwrap();
        let reply = deployment_reply(&firmware, &release());
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"id": "7", "deployment": {"download": "forced", "update": "forced", "chunks": [{
                "part": "os", "version": "2.4.1", "name": "sensor-2-4-1",
                "artifacts": [{"filename": "2.4.1.bin", "size": 8_388_608,
                    "hashes": {"sha1": "", "md5": "", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
                    "_links": {"download": {"href": "https://fw.example.com/sensor/2.4.1.bin?sig=x"}}}]}]}})
        );
        let mut plain = release();
        plain.artifact.url = "http://fw.example.com/".into();
        let reply = deployment_reply(&firmware, &plain);
        let artifact = &reply.deployment.chunks[0].artifacts[0];
        assert_eq!(artifact.filename, "sensor-2-4-1.bin");
        assert!(artifact.links.contains_key("download-http"));
    }

    #[test]
    fn etags_match_lists_and_weak_forms() {
        let tag = etag(b"{}");
        assert!(if_none_match(&tag, &tag));
        assert!(if_none_match(&format!("\"x\", W/{tag}"), &tag));
        assert!(if_none_match("*", &tag));
        assert!(!if_none_match("\"other\"", &tag));
        assert_ne!(etag(b"{}"), etag(b"[]"));
    }
}
