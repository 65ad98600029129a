//! Flotilla's API: the `flotilla.dev/v1alpha1` custom resources, their schemas and the
//! validation the schemas cannot express. Pure types and functions, no I/O.
//!
//! | Kind | Scope | Short name | Module |
//! |---|---|---|---|
//! | [`Plan`] | Cluster | `fplan` | [`plan`] |
//! | [`Subscription`] | Cluster | `fsub` | [`subscription`] |
//! | [`Channel`] | Namespaced | `fchan` | [`channel`] |
//! | [`Campaign`] | Namespaced | `fcamp` | [`campaign`] |
//! | [`FirmwareRelease`] | Namespaced | `fwrel` | [`firmware_release`] |
//! | [`Device`] | Namespaced | `fdev` | [`device`] |
//! | [`FirmwareRollout`] | Namespaced | `fwro` | [`firmware_rollout`] |
//!
//! Every kind has a status subresource with `phase`, `conditions` and `observedGeneration`,
//! belongs to the `flotilla` category (`kubectl get flotilla -A`), and has a `validate()`
//! function on its spec for the rules the schema cannot express.

pub mod campaign;
pub mod channel;
pub mod common;
pub mod condition;
pub mod device;
pub mod firmware_release;
pub mod firmware_rollout;
pub mod phase;
pub mod plan;
pub mod quantity;
pub mod subscription;

pub use campaign::{Campaign, CampaignPhase, CampaignSpec, CampaignStatus};
pub use channel::{Channel, ChannelPhase, ChannelSpec, ChannelStatus};
pub use common::{API_VERSION, CATEGORY, FINALIZER, GROUP, SpecError, VERSION};
pub use condition::Condition;
pub use device::{Device, DevicePhase, DeviceSpec, DeviceStatus};
pub use firmware_release::{
    FirmwareRelease, FirmwareReleasePhase, FirmwareReleaseSpec, FirmwareReleaseStatus,
};
pub use firmware_rollout::{
    FirmwareRollout, FirmwareRolloutPhase, FirmwareRolloutSpec, FirmwareRolloutStatus,
};
pub use plan::{Plan, PlanPhase, PlanSpec, PlanStatus};
pub use quantity::ParsedQuantity;
pub use subscription::{Subscription, SubscriptionPhase, SubscriptionSpec, SubscriptionStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every Flotilla CustomResourceDefinition, in a fixed order (subscriptions domain, campaigns,
/// OTA).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        Plan::crd(),
        Subscription::crd(),
        Channel::crd(),
        Campaign::crd(),
        FirmwareRelease::crd(),
        Device::crd(),
        FirmwareRollout::crd(),
    ]
}

/// Every CRD as one multi-document YAML stream, each document starting with `---`, in the
/// order of [`all_crds`]. The same types always give the same bytes.
pub fn crds_yaml() -> String {
    all_crds().iter().map(crd_yaml).collect()
}

/// One CRD as a YAML document starting with `---`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    let body =
        serde_norway::to_string(crd).expect("a CustomResourceDefinition always serializes to YAML");
    format!("---\n{body}")
}

/// Header of each checked-in CRD file.
const GENERATED_HEADER: &str = "# Generated from the Rust types in crds/ - do not edit.\n\
# Regenerate: FLOTILLA_UPDATE_CRDS=1 cargo test -p flotilla-crds --test crd_drift\n";

/// The checked-in form of every CRD: `(file name, contents)`, one file per CRD named after
/// it (e.g. `plans.flotilla.dev.yaml`), as kept in `charts/flotilla/crds/`.
pub fn crd_files() -> Vec<(String, String)> {
    all_crds()
        .iter()
        .map(|crd| {
            let name = crd
                .metadata
                .name
                .as_deref()
                .expect("derived CRDs are named");
            (
                format!("{name}.yaml"),
                format!("{GENERATED_HEADER}{}", crd_yaml(crd)),
            )
        })
        .collect()
}
