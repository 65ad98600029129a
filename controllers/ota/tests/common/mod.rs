//! The harness of the OTA controller tests: a sandbox API server with Flotilla's CRDs and the
//! real OTA controllers running against it in-process.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod fleet;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

#[allow(unused_imports)] // each test binary uses some
pub use flotilla_testkit::{NAMESPACE, OPERATOR_USER_AGENT, WAIT, operator_rules};

/// The testkit's harness running the OTA controllers a test selects.
pub struct Harness(flotilla_testkit::Harness);

impl Harness {
    /// The release controller alone.
    pub async fn start() -> Self {
        Self::start_with(flotilla_ota::Selection {
            release: true,
            rollout: false,
        })
        .await
    }

    /// The selected controllers.
    pub async fn start_with(selection: flotilla_ota::Selection) -> Self {
        Self::start_with_client(selection, true).await
    }

    /// The selected controllers; `client_retries: false` switches kube's own retries off.
    pub async fn start_with_client(
        selection: flotilla_ota::Selection,
        client_retries: bool,
    ) -> Self {
        let spawn: flotilla_testkit::Spawn = Arc::new(move |operator| {
            Box::pin(async move { flotilla_ota::run(&operator, selection).await })
        });
        Self(flotilla_testkit::Harness::start_with_client(spawn, client_retries).await)
    }

    /// The selected controllers, with `removed` taken out of `config/rbac/` before they start.
    pub async fn start_without(
        selection: flotilla_ota::Selection,
        removed: &flotilla_testkit::rbac::Grant,
    ) -> Self {
        let spawn: flotilla_testkit::Spawn = Arc::new(move |operator| {
            Box::pin(async move { flotilla_ota::run(&operator, selection).await })
        });
        Self(flotilla_testkit::Harness::start_with_rbac(spawn, true, Some(removed)).await)
    }

    /// Stops the operator and the sandbox, checking RBAC.
    pub async fn stop(self) {
        self.0.stop().await;
    }
}

impl Deref for Harness {
    type Target = flotilla_testkit::Harness;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

pub fn release(name: &str, version: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "FirmwareRelease",
        "metadata": {"name": name},
        "spec": {
            "version": version,
            "artifact": {
                "url": "https://firmware.example.com/fw.bin",
                "sha256": "ab".repeat(32),
                "sizeBytes": 1024,
            },
            "compatibleModels": ["gw-100"],
        },
    })
}

/// A Device of model gw-100.
pub fn device(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Device",
        "metadata": {"name": name, "labels": {"ring": "canary"}},
        "spec": {"model": "gw-100"},
    })
}

/// A FirmwareRollout of `release`.
pub fn rollout(name: &str, release: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "FirmwareRollout",
        "metadata": {"name": name},
        "spec": {"release": release, "selector": {"matchLabels": {"ring": "canary"}}},
    })
}
