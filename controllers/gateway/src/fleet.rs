//! What the gateway knows about the fleet: Devices, FirmwareReleases and device-token Secrets,
//! each from one watch cache per namespace served (or one for the cluster), so a poll costs no
//! API request. Devices the gateway itself just wrote are read from the write's response until
//! the watch catches up, so a report repeated a moment later is recognised as a repeat.
//!
//! Devices and their tokens number a hundred thousand, so their caches are the gateway's own
//! ([`ListedCache`]): per Device only what polls, reports and authentication read (the
//! enrollment record, the resourceVersion, the spec and status as compressed JSON), per token
//! its 32-byte hash; a re-list updates them in place instead of building a second copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use flotilla_crds::{Device, DeviceSpec, DeviceStatus, FirmwareRelease};
use flotilla_runtime::readiness::Readiness;
use flotilla_runtime::watch::{SharedWatch, secret_data_only, watcher_config};

use crate::auth;
use crate::listed::ListedCache;
use crate::packed;
use flotilla_runtime::{Config, Shutdown};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};

/// The label that marks device-token Secrets; only those are watched, so the gateway reads no
/// other Secret.
pub const TOKEN_SECRET_LABEL: &str = "flotilla.dev/device-token";

/// The label that marks fleet gateway-token Secrets (enrollment, see [`crate::auth`]).
pub const GATEWAY_TOKEN_LABEL: &str = "flotilla.dev/gateway-token";

/// The annotation naming the gateway-token Secret that enrolled a Device; only that Secret's
/// token authenticates the Device afterwards.
pub const ENROLLED_BY_ANNOTATION: &str = "flotilla.dev/enrolled-by";

#[derive(Clone)]
struct Scope {
    devices: Arc<RwLock<DeviceCache>>,
    releases: Store<FirmwareRelease>,
    device_tokens: Arc<RwLock<ListedCache<TokenHashes>>>,
    gateway_tokens: Store<Secret>,
}

/// Devices written by this process and not yet seen back from the watch, by `namespace/name`.
type OwnWrites = Arc<Mutex<HashMap<(String, String), Arc<CachedDevice>>>>;

/// What the gateway keeps of a Device, with the spec and status [`packed`] (compressed JSON)
/// and decoded when the Device is read: keeping the spec decoded (an allocation per string)
/// took the 100,000-device rollout benchmark's gateway to 211 MiB, plain JSON to 201 MiB.
#[derive(Debug, PartialEq)]
struct CachedDevice {
    /// What a status write is conditional on, and how a write is told from an older event.
    resource_version: Option<Box<str>>,
    /// The gateway-token Secret that enrolled it ([`ENROLLED_BY_ANNOTATION`]).
    enrolled_by: Option<Box<str>>,
    /// `spec`, packed.
    spec: Box<[u8]>,
    /// `status`, packed, without `conditions` and `observedGeneration`: the controllers' fields,
    /// which the gateway neither reads nor writes.
    status: Option<Box<[u8]>>,
}

impl CachedDevice {
    fn of(device: &Device) -> Self {
        let status = device.status.as_ref().map(|status| {
            let kept = DeviceStatus {
                conditions: Vec::new(),
                observed_generation: None,
                ..status.clone()
            };
            packed::pack(&kept)
        });
        Self {
            resource_version: device.metadata.resource_version.as_deref().map(Into::into),
            enrolled_by: device
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ENROLLED_BY_ANNOTATION))
                .map(|by| by.as_str().into()),
            spec: packed::pack(&device.spec),
            status,
        }
    }

    /// The Device `namespace/name` as the gateway reads it: name, namespace, resourceVersion,
    /// the enrollment annotation, spec and status.
    fn device(&self, namespace: &str, name: &str) -> Device {
        let mut device = Device::new(name, packed::unpack::<DeviceSpec>(&self.spec));
        device.metadata.namespace = Some(namespace.to_owned());
        device.metadata.resource_version = self.resource_version.as_deref().map(str::to_owned);
        device.metadata.annotations = self
            .enrolled_by
            .as_deref()
            .map(|by| [(ENROLLED_BY_ANNOTATION.to_owned(), by.to_owned())].into());
        device.status = self.status.as_deref().map(packed::unpack::<DeviceStatus>);
        device
    }

    fn version(&self) -> Option<u64> {
        self.resource_version.as_deref()?.parse().ok()
    }
}

/// The Devices of a scope.
type DeviceCache = ListedCache<Arc<CachedDevice>>;

/// What the gateway keeps of a device-token Secret: the SHA-256 under each key, decoded from
/// its hex. A Secret of 4,000 tokens decoded whole (a `BTreeMap` of key and hex `Vec`) took
/// about 170 bytes a token; this takes about 70.
type TokenHashes = HashMap<Box<str>, [u8; 32]>;

fn token_hashes(secret: &Secret) -> TokenHashes {
    let mut invalid = 0_usize;
    let hashes = secret
        .data
        .iter()
        .flatten()
        .filter_map(|(key, value)| {
            let hash = auth::stored_hash(&value.0);
            invalid += usize::from(hash.is_none());
            Some((key.as_str().into(), hash?))
        })
        .collect();
    if invalid > 0 {
        // Such a key authenticates no device (as an absent one); say so once per change.
        tracing::warn!(
            secret = %format!(
                "{}/{}",
                secret.metadata.namespace.as_deref().unwrap_or_default(),
                secret.metadata.name.as_deref().unwrap_or_default()
            ),
            invalid,
            "device-token Secret keys that are not a SHA-256 hex digest authenticate no device"
        );
    }
    hashes
}

/// The gateway's view of the fleet. Cheap to share (`Arc`).
pub struct Fleet {
    by_namespace: HashMap<String, Scope>,
    cluster: Option<Scope>,
    own_writes: OwnWrites,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("namespaces", &self.by_namespace.keys().collect::<Vec<_>>())
            .field("cluster", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn resource_version<K: Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

impl Fleet {
    /// Starts the watches of `namespaces` (all namespaces when empty), each registered with
    /// `readiness`, running until `shutdown`.
    pub fn start(
        client: &Client,
        namespaces: &[String],
        config: &Config,
        readiness: &Readiness,
        shutdown: &Shutdown,
    ) -> Arc<Self> {
        let own_writes = OwnWrites::default();
        let start = |namespace: Option<&str>| {
            let suffix = namespace.map_or_else(String::new, |ns| format!(" in {ns}"));
            // Uncached: the handler below keeps the gateway's own, smaller cache.
            let mut devices =
                SharedWatch::new("devices", api(client, namespace), watcher_config(config))
                    .uncached();
            let cache =
                DeviceCache::fed_by(&mut devices, |device| Arc::new(CachedDevice::of(device)));
            let writes = own_writes.clone();
            devices.on_event(move |event| {
                let seen = match event {
                    watcher::Event::Apply(d) | watcher::Event::InitApply(d) => d,
                    watcher::Event::Delete(d) => d,
                    _ => return,
                };
                let key = (
                    seen.metadata.namespace.clone().unwrap_or_default(),
                    seen.metadata.name.clone().unwrap_or_default(),
                );
                let mut writes = writes.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(written) = writes.get(&key)
                    && resource_version(seen) >= written.version()
                {
                    writes.remove(&key);
                }
            });
            let releases = SharedWatch::new(
                "firmwarereleases",
                api(client, namespace),
                watcher_config(config),
            );
            let mut secrets = SharedWatch::new(
                "secrets",
                api(client, namespace),
                watcher_config(config).labels(TOKEN_SECRET_LABEL),
            )
            .uncached();
            let device_tokens = ListedCache::fed_by(&mut secrets, token_hashes);
            let gateway_tokens = SharedWatch::new(
                "secrets",
                api(client, namespace),
                watcher_config(config).labels(GATEWAY_TOKEN_LABEL),
            )
            .caching(secret_data_only);
            let scope = Scope {
                devices: cache,
                releases: releases.store(),
                device_tokens,
                gateway_tokens: gateway_tokens.store(),
            };
            readiness.track(format!("devices{suffix}"), devices.synced());
            readiness.track(format!("firmwarereleases{suffix}"), releases.synced());
            readiness.track(format!("device-token secrets{suffix}"), secrets.synced());
            readiness.track(
                format!("gateway-token secrets{suffix}"),
                gateway_tokens.synced(),
            );
            tokio::spawn(devices.run(shutdown.signalled()));
            tokio::spawn(releases.run(shutdown.signalled()));
            tokio::spawn(secrets.run(shutdown.signalled()));
            tokio::spawn(gateway_tokens.run(shutdown.signalled()));
            scope
        };
        let (by_namespace, cluster) = if namespaces.is_empty() {
            (HashMap::new(), Some(start(None)))
        } else {
            let scopes = namespaces
                .iter()
                .map(|ns| (ns.clone(), start(Some(ns))))
                .collect();
            (scopes, None)
        };
        Arc::new(Self {
            by_namespace,
            cluster,
            own_writes,
        })
    }

    fn scope(&self, namespace: &str) -> Option<&Scope> {
        self.by_namespace.get(namespace).or(self.cluster.as_ref())
    }

    /// Whether the gateway serves tenant `namespace`.
    pub fn serves(&self, namespace: &str) -> bool {
        self.scope(namespace).is_some()
    }

    /// The Device `namespace/name` as last seen or written.
    pub fn device(&self, namespace: &str, name: &str) -> Option<Arc<Device>> {
        let cached = self
            .scope(namespace)?
            .devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace, name)
            .cloned();
        let written = self
            .own_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned();
        let newest = match (cached, written) {
            (Some(cached), Some(written)) if written.version() > cached.version() => written,
            // Just created (enrolled) by this process, not yet seen by the watch.
            (None, Some(written)) => written,
            (cached, _) => cached?,
        };
        Some(Arc::new(newest.device(namespace, name)))
    }

    /// Remembers a Device this process wrote, until the watch delivers it (or a newer one).
    pub fn wrote(&self, device: &Device) {
        let key = (
            device.metadata.namespace.clone().unwrap_or_default(),
            device.metadata.name.clone().unwrap_or_default(),
        );
        self.own_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Arc::new(CachedDevice::of(device)));
    }

    /// The FirmwareRelease `namespace/name`.
    pub fn release(&self, namespace: &str, name: &str) -> Option<Arc<FirmwareRelease>> {
        self.scope(namespace)?
            .releases
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// The token hash under `key` of the device-token Secret `namespace/name`; none when the
    /// value there is not a SHA-256 hex digest.
    pub fn token_hash(&self, namespace: &str, name: &str, key: &str) -> Option<[u8; 32]> {
        self.scope(namespace)?
            .device_tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace, name)?
            .get(key)
            .copied()
    }

    /// The gateway-token Secrets of tenant `namespace` (few per namespace: one per fleet or
    /// batch of devices), as `(name, data)`.
    pub fn gateway_tokens(&self, namespace: &str) -> Vec<(String, GatewayTokenData)> {
        let Some(scope) = self.scope(namespace) else {
            return Vec::new();
        };
        scope
            .gateway_tokens
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .map(|s| {
                let data = s.data.as_ref();
                let value = |key: &str| data.and_then(|d| d.get(key)).map(|v| v.0.clone());
                (
                    s.metadata.name.clone().unwrap_or_default(),
                    GatewayTokenData {
                        token_hash: value("tokenHash"),
                        model: value("model"),
                    },
                )
            })
            .collect()
    }
}

/// The keys of a gateway-token Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayTokenData {
    /// `tokenHash`: SHA-256 hex of the fleet token.
    pub token_hash: Option<Vec<u8>>,
    /// `model`: the model of the Devices it enrolls.
    pub model: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device(name: &str, version: &str, serial: Option<&str>) -> Device {
        let mut status = json!({"phase": "Online", "currentVersion": "1.0.0",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Seen", "message": "",
                            "lastTransitionTime": "2030-01-01T09:00:00Z"}],
            "observedGeneration": 3});
        if let Some(serial) = serial {
            status["attributes"] = json!({"serial": serial});
        }
        serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
            "metadata": {"name": name, "namespace": "fleet", "resourceVersion": version,
                         "uid": "0b3c1d5e-5b4e-4a59-9d53-3f3c4a3b2a10",
                         "labels": {"flotilla.dev/simulated": "sim"},
                         "annotations": {ENROLLED_BY_ANNOTATION: "fleet-enrollment",
                                         "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"model": "sensor-v2", "tokenSecretRef": {"name": "tokens", "key": name},
                     "firmware": {"version": "2.4.1", "release": "sensor-2-4-1", "actionId": 7}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_device_is_read_back_with_what_the_gateway_uses_and_nothing_else() {
        let full = device("sensor-1", "12", Some("SN-1"));
        let read = CachedDevice::of(&full).device("fleet", "sensor-1");
        assert_eq!(read.metadata.name.as_deref(), Some("sensor-1"));
        assert_eq!(read.metadata.namespace.as_deref(), Some("fleet"));
        assert_eq!(read.metadata.resource_version.as_deref(), Some("12"));
        assert_eq!(
            read.metadata.annotations,
            Some(
                [(
                    ENROLLED_BY_ANNOTATION.to_owned(),
                    "fleet-enrollment".to_owned()
                )]
                .into()
            )
        );
        assert_eq!((read.metadata.labels, read.metadata.uid), (None, None));
        assert_eq!(read.spec, full.spec);
        let (status, original) = (read.status.unwrap(), full.status.unwrap());
        assert_eq!(
            status,
            DeviceStatus {
                conditions: Vec::new(),
                observed_generation: None,
                ..original
            }
        );
        let bare = CachedDevice::of(&Device::new("sensor-2", full.spec.clone()));
        assert_eq!(bare.device("fleet", "sensor-2").status, None);
    }

    #[test]
    fn a_token_secret_is_kept_as_the_hashes_it_holds() {
        let hash = auth::token_hash_hex("s3cret");
        let value = |v: &str| k8s_openapi::ByteString(v.as_bytes().to_vec());
        let secret = Secret {
            data: Some(
                [
                    // With the trailing newline `sha256sum` leaves.
                    ("sensor-1".to_owned(), value(&format!("{hash}\n"))),
                    ("sensor-2".to_owned(), value(&hash.to_uppercase())),
                    ("sensor-3".to_owned(), value("s3cret")),
                ]
                .into(),
            ),
            ..Secret::default()
        };
        let kept = token_hashes(&secret);
        let expected: [u8; 32] = hex::decode(&hash).unwrap().try_into().unwrap();
        assert_eq!(kept.get("sensor-1"), Some(&expected));
        assert_eq!(kept.get("sensor-2"), Some(&expected));
        // Not a digest: kept as absent, so it authenticates nothing.
        assert_eq!(kept.get("sensor-3"), None);
        assert_eq!(kept.len(), 2);
        assert!(token_hashes(&Secret::default()).is_empty());
    }

    #[test]
    fn the_device_cache_serves_what_the_watch_delivered() {
        let mut cache = DeviceCache::default();
        let keep = |device: &Device| Arc::new(CachedDevice::of(device));
        cache.apply(&watcher::Event::Init, keep);
        cache.apply(&watcher::Event::InitApply(device("a", "1", None)), keep);
        cache.apply(&watcher::Event::InitDone, keep);
        cache.apply(&watcher::Event::Apply(device("a", "3", Some("SN-3"))), keep);
        let a = cache.get("fleet", "a").unwrap();
        assert_eq!(a.version(), Some(3));
        let status = a.device("fleet", "a").status.unwrap();
        assert!(status.attributes.contains_key("serial"));
    }
}
