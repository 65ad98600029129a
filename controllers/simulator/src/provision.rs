//! Creates the Device objects and token Secrets of a simulated fleet (tests, the demo and
//! benchmarks): what an installer does for real devices, done once before the simulator runs.

use std::collections::BTreeMap;

use flotilla_crds::Device;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::spec::{FleetSpec, token_for, token_hash};

/// The label the gateway selects token Secrets by (`flotilla_gateway::TOKEN_SECRET_LABEL`).
pub const TOKEN_SECRET_LABEL: &str = "flotilla.dev/device-token";
/// Every simulated Device and token Secret carries it, with the fleet's name prefix.
pub const SIMULATED_LABEL: &str = "flotilla.dev/simulated";
/// Who writes the starting `status.currentVersion`.
pub const FIELD_MANAGER: &str = "flotilla-simulator";
/// Device tokens per Secret: 4,000 hashes (~100 bytes each with the key, base64) stay far
/// below the 1 MiB object limit.
pub const TOKENS_PER_SECRET: usize = 4000;
/// Creations in flight at once.
const CONCURRENT_WRITES: usize = 16;

/// The Secret holding the token hash of device `index`.
pub fn token_secret_name(spec: &FleetSpec, index: usize) -> String {
    format!("{}tokens-{}", spec.name_prefix, index / TOKENS_PER_SECRET)
}

/// Creates the fleet's token Secrets, then its Devices (model, `tokenSecretRef`, the
/// `flotilla.dev/simulated` label) with `status.currentVersion` = the starting version, as
/// an installer would record it. Objects that exist already are left as they are, so a
/// second call is harmless. Writes: one per Secret, two per Device.
pub async fn provision(client: &Client, spec: &FleetSpec) -> Result<(), kube::Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), &spec.namespace);
    let devices = Api::<Device>::namespaced(client.clone(), &spec.namespace);
    let prefix = label_value(&spec.name_prefix);
    let mut chunks: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for index in 0..spec.devices {
        let name = spec.device_name(index);
        chunks
            .entry(token_secret_name(spec, index))
            .or_default()
            .insert(name.clone(), token_hash(&token_for(spec.seed, &name)));
    }
    futures::stream::iter(chunks)
        .map(|(name, hashes)| {
            let secrets = secrets.clone();
            let prefix = prefix.clone();
            async move {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {
                        TOKEN_SECRET_LABEL: "true", SIMULATED_LABEL: prefix}},
                    "stringData": hashes,
                }))
                .expect("a valid Secret");
                created(secrets.create(&PostParams::default(), &secret).await).map(drop)
            }
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .try_collect::<()>()
        .await?;
    futures::stream::iter(0..spec.devices)
        .map(|index| {
            let devices = devices.clone();
            let profile = spec.profile(index);
            let secret = token_secret_name(spec, index);
            let prefix = prefix.clone();
            let version = spec.starting_version.clone();
            async move {
                let device: Device = serde_json::from_value(json!({
                    "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
                    "metadata": {"name": profile.name, "labels": {SIMULATED_LABEL: prefix}},
                    "spec": {"model": profile.model,
                             "tokenSecretRef": {"name": secret, "key": profile.name}},
                }))
                .expect("a valid Device");
                let fresh = created(devices.create(&PostParams::default(), &device).await)?;
                if fresh {
                    devices
                        .patch_status(
                            &profile.name,
                            &PatchParams::apply(FIELD_MANAGER),
                            &Patch::Apply(json!({
                                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
                                "status": {"currentVersion": version},
                            })),
                        )
                        .await?;
                }
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .try_collect::<()>()
        .await
}

/// Whether the object was created; one that exists already is no error.
fn created<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// A label value from the name prefix (`sim-` → `sim`).
fn label_value(prefix: &str) -> String {
    let value: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    let value = value.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if value.is_empty() {
        "true".to_owned()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hold_a_bounded_number_of_tokens() {
        let spec = FleetSpec {
            devices: 100_000,
            ..FleetSpec::default()
        };
        assert_eq!(token_secret_name(&spec, 0), "sim-tokens-0");
        assert_eq!(token_secret_name(&spec, 3999), "sim-tokens-0");
        assert_eq!(token_secret_name(&spec, 4000), "sim-tokens-1");
        assert_eq!(token_secret_name(&spec, 99_999), "sim-tokens-24");
        // Key, base64 of the 64-hex hash and JSON punctuation, well below 1 MiB.
        let per_token = spec.device_name(99_999).len() + 88 + 6;
        assert!(TOKENS_PER_SECRET * per_token < 512 * 1024);
    }

    #[test]
    fn prefixes_become_label_values() {
        assert_eq!(label_value("sim-"), "sim");
        assert_eq!(label_value("--"), "true");
        assert_eq!(label_value("fleet.a_"), "fleet.a");
    }
}
