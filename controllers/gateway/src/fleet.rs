//! What the gateway knows about the fleet: Devices, FirmwareReleases and device-token Secrets,
//! each from one watch cache per namespace served (or one for the cluster), so a poll costs no
//! API request. Devices the gateway itself just wrote are read from the write's response until
//! the watch catches up, so a report repeated a moment later is recognised as a repeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use flotilla_crds::{Device, FirmwareRelease};
use flotilla_runtime::readiness::Readiness;
use flotilla_runtime::watch::{SharedWatch, watcher_config};
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
    devices: Store<Device>,
    releases: Store<FirmwareRelease>,
    secrets: Store<Secret>,
    gateway_tokens: Store<Secret>,
}

/// Devices written by this process and not yet seen back from the watch, by `namespace/name`.
type OwnWrites = Arc<Mutex<HashMap<(String, String), Arc<Device>>>>;

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

/// What the gateway keeps of a token Secret: its name and data.
fn data_only(secret: &Secret) -> Secret {
    let mut kept = Secret::default();
    kept.metadata.name = secret.metadata.name.clone();
    kept.metadata.namespace = secret.metadata.namespace.clone();
    kept.metadata.resource_version = secret.metadata.resource_version.clone();
    kept.data = secret.data.clone();
    kept
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
            let mut devices =
                SharedWatch::new("devices", api(client, namespace), watcher_config(config))
                    .caching(|device: &Device| {
                        let mut kept = device.clone();
                        // Only the enrollment record is read from the annotations.
                        kept.metadata.annotations = device
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ENROLLED_BY_ANNOTATION))
                            .map(|by| [(ENROLLED_BY_ANNOTATION.to_owned(), by.clone())].into());
                        kept.metadata.managed_fields = None;
                        kept
                    });
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
                    && resource_version(seen) >= resource_version(written.as_ref())
                {
                    writes.remove(&key);
                }
            });
            let releases = SharedWatch::new(
                "firmwarereleases",
                api(client, namespace),
                watcher_config(config),
            );
            let secrets = SharedWatch::new(
                "secrets",
                api(client, namespace),
                watcher_config(config).labels(TOKEN_SECRET_LABEL),
            )
            .caching(data_only);
            let gateway_tokens = SharedWatch::new(
                "secrets",
                api(client, namespace),
                watcher_config(config).labels(GATEWAY_TOKEN_LABEL),
            )
            .caching(data_only);
            let scope = Scope {
                devices: devices.store(),
                releases: releases.store(),
                secrets: secrets.store(),
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
            .get(&ObjectRef::new(name).within(namespace));
        let writes = self
            .own_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (cached, writes.get(&(namespace.to_owned(), name.to_owned()))) {
            (Some(cached), Some(written))
                if resource_version(written.as_ref()) > resource_version(cached.as_ref()) =>
            {
                Some(written.clone())
            }
            // Just created (enrolled) by this process, not yet seen by the watch.
            (None, Some(written)) => Some(written.clone()),
            (cached, _) => cached,
        }
    }

    /// Remembers a Device this process wrote, until the watch delivers it (or a newer one).
    pub fn wrote(&self, device: Device) {
        let key = (
            device.metadata.namespace.clone().unwrap_or_default(),
            device.metadata.name.clone().unwrap_or_default(),
        );
        self.own_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Arc::new(device));
    }

    /// The FirmwareRelease `namespace/name`.
    pub fn release(&self, namespace: &str, name: &str) -> Option<Arc<FirmwareRelease>> {
        self.scope(namespace)?
            .releases
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// The bytes under `key` of the labelled Secret `namespace/name`.
    pub fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        let secret = self
            .scope(namespace)?
            .secrets
            .get(&ObjectRef::new(name).within(namespace))?;
        secret.data.as_ref()?.get(key).map(|value| value.0.clone())
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
