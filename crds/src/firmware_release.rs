//! `FirmwareRelease` (namespaced): one published firmware version — its artifact, the device
//! models it fits, and the oldest version it can be installed over.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{SEMVER_MAX_LENGTH, SEMVER_PATTERN, SpecError, into_result};
use crate::condition::Condition;

/// Pattern of a device model name (a label value, so devices can be labelled by model).
pub const MODEL_PATTERN: &str = "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";
/// Longest device model name.
pub const MODEL_MAX_LENGTH: u32 = 63;
/// Most compatible models of one release.
pub const MAX_COMPATIBLE_MODELS: u32 = 64;
/// Pattern of a SHA-256 digest: 64 lower-case hex digits.
pub const SHA256_PATTERN: &str = "^[a-f0-9]{64}$";
/// Most rollout names kept in `status.rollouts`.
pub const MAX_LISTED_ROLLOUTS: u32 = 32;

/// A firmware version that can be rolled out to devices.
// Each `printcolumn(...)` repeats keys such as `type_`, which clippy's duplicated_attributes
// lint mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "FirmwareRelease",
    plural = "firmwarereleases",
    singular = "firmwarerelease",
    shortname = "fwrel",
    category = "flotilla",
    namespaced,
    status = "FirmwareReleaseStatus",
    derive = "PartialEq",
    doc = "A FirmwareRelease is one published firmware version: its artifact (URL, SHA-256, size), \
           the device models it fits, and the oldest version it installs over. Version and artifact \
           are immutable; a release used by a running FirmwareRollout cannot be deleted.",
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Models",
        type_ = "string",
        json_path = ".spec.compatibleModels",
        priority = 1
    ),
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".spec.artifact.sizeBytes",
        description = "Artifact size in bytes",
        priority = 1
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareReleaseSpec {
    /// The firmware version, a semantic version without a leading `v` (e.g. `2.4.1`).
    /// Immutable: publish a new FirmwareRelease for a new version.
    #[schemars(length(min = 5, max = SEMVER_MAX_LENGTH), pattern(SEMVER_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("version is immutable; publish a new FirmwareRelease"))]
    pub version: String,

    /// Where devices download the firmware image, and how they check it. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("artifact is immutable; publish a new FirmwareRelease"))]
    pub artifact: Artifact,

    /// Device models (`spec.model` of a Device) this firmware fits; a rollout only targets
    /// devices of these models.
    #[schemars(
        length(min = 1, max = MAX_COMPATIBLE_MODELS),
        inner(length(min = 1, max = MODEL_MAX_LENGTH), pattern(MODEL_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub compatible_models: Vec<String>,

    /// Devices running a version below this one cannot install this release directly and are
    /// skipped by rollouts (the reason is reported). Omit to allow any version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 5, max = SEMVER_MAX_LENGTH), pattern(SEMVER_PATTERN))]
    pub minimum_from_version: Option<String>,

    /// Release notes (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub notes: Option<String>,
}

/// The downloadable firmware image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// http(s) URL of the image.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("must be an absolute http or https URL"))]
    pub url: String,

    /// SHA-256 digest of the image: 64 lower-case hex digits. Devices verify it before
    /// installing.
    #[schemars(length(equal = 64), pattern(SHA256_PATTERN))]
    pub sha256: String,

    /// Size of the image in bytes.
    #[schemars(range(min = 1))]
    pub size_bytes: i64,
}

/// Observed state of a FirmwareRelease, written by the release controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareReleaseStatus {
    /// Pending (not validated yet), Ready, Invalid (the Ready condition says why) or
    /// Terminating (deleted, waiting for the rollouts that use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<FirmwareReleasePhase>,

    /// Conditions: Ready, InUse.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// Running FirmwareRollouts that use this release (at most 32 names listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_ROLLOUTS), inner(length(max = 253)), extend("x-kubernetes-list-type" = "set"))]
    pub rollouts: Vec<String>,

    /// Devices in this namespace whose `status.currentVersion` is this release's version.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub devices: i64,
}

/// Lifecycle phase of a FirmwareRelease.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum FirmwareReleasePhase {
    /// Not validated yet.
    #[default]
    Pending,
    /// Valid; rollouts can use it.
    Ready,
    /// Invalid (e.g. a bad digest or URL); the Ready condition says why.
    Invalid,
    /// Deleted, waiting until no running rollout uses it.
    Terminating,
}

impl crate::phase::Phase for FirmwareReleasePhase {
    const ALL: &'static [Self] = &[
        FirmwareReleasePhase::Pending,
        FirmwareReleasePhase::Ready,
        FirmwareReleasePhase::Invalid,
        FirmwareReleasePhase::Terminating,
    ];
    const INITIAL: Self = FirmwareReleasePhase::Pending;

    fn as_str(self) -> &'static str {
        match self {
            FirmwareReleasePhase::Pending => "Pending",
            FirmwareReleasePhase::Ready => "Ready",
            FirmwareReleasePhase::Invalid => "Invalid",
            FirmwareReleasePhase::Terminating => "Terminating",
        }
    }

    fn allows(self, next: Self) -> bool {
        use FirmwareReleasePhase::{Invalid, Pending, Ready, Terminating};
        matches!(
            (self, next),
            (Pending, Ready | Invalid | Terminating)
                | (Ready, Invalid | Terminating)
                | (Invalid, Ready | Terminating)
        )
    }
}

impl FirmwareReleaseSpec {
    /// The release version, parsed.
    pub fn semver(&self) -> Result<semver::Version, semver::Error> {
        semver::Version::parse(&self.version)
    }

    /// The minimum version a device must run to install this release, parsed.
    pub fn minimum_from_semver(&self) -> Option<Result<semver::Version, semver::Error>> {
        self.minimum_from_version
            .as_deref()
            .map(semver::Version::parse)
    }

    /// Whether a device of `model` can take this release.
    pub fn fits_model(&self, model: &str) -> bool {
        self.compatible_models.iter().any(|m| m == model)
    }

    /// Checks what the schema cannot: versions are valid semantic versions, the minimum is
    /// below the release version, the URL parses with an http(s) scheme and a host, the digest
    /// is 64 lower-case hex digits, the size is positive, and models are listed once.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        let version = match self.semver() {
            Ok(version) => Some(version),
            Err(error) => {
                errors.push(SpecError::new(
                    "spec.version",
                    format!("{:?} is not a semantic version: {error}", self.version),
                ));
                None
            }
        };
        match self.minimum_from_semver() {
            Some(Err(error)) => errors.push(SpecError::new(
                "spec.minimumFromVersion",
                format!("not a semantic version: {error}"),
            )),
            Some(Ok(minimum)) if version.as_ref().is_some_and(|v| &minimum >= v) => {
                errors.push(SpecError::new(
                    "spec.minimumFromVersion",
                    format!(
                        "{minimum} must be below the release version {}",
                        self.version
                    ),
                ))
            }
            _ => {}
        }
        match url::Url::parse(&self.artifact.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(url) => errors.push(SpecError::new(
                "spec.artifact.url",
                format!(
                    "scheme {:?} is not allowed (http or https with a host)",
                    url.scheme()
                ),
            )),
            Err(error) => errors.push(SpecError::new(
                "spec.artifact.url",
                format!("not a URL: {error}"),
            )),
        }
        if !is_sha256_hex(&self.artifact.sha256) {
            errors.push(SpecError::new(
                "spec.artifact.sha256",
                "must be 64 lower-case hex digits",
            ));
        }
        if self.artifact.size_bytes <= 0 {
            errors.push(SpecError::new(
                "spec.artifact.sizeBytes",
                "must be positive",
            ));
        }
        if self.compatible_models.is_empty() {
            errors.push(SpecError::new(
                "spec.compatibleModels",
                "at least one model is required",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, model) in self.compatible_models.iter().enumerate() {
            if !seen.insert(model) {
                errors.push(SpecError::new(
                    format!("spec.compatibleModels[{i}]"),
                    format!("{model:?} is listed more than once"),
                ));
            }
        }
        into_result(errors)
    }
}

/// Whether `s` is a SHA-256 digest written as 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FirmwareReleaseSpec {
        serde_json::from_value(serde_json::json!({
            "version": "2.4.1",
            "artifact": {
                "url": "https://firmware.example.com/sensor-v2/2.4.1.bin",
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "sizeBytes": 8_388_608,
            },
            "compatibleModels": ["sensor-v2", "sensor-v2b"],
            "minimumFromVersion": "2.0.0",
        }))
        .unwrap()
    }

    #[test]
    fn a_sensible_release_is_valid() {
        let spec = spec();
        assert_eq!(spec.validate(), Ok(()));
        assert!(spec.fits_model("sensor-v2b"));
        assert!(!spec.fits_model("sensor-v1"));
        assert_eq!(spec.semver().unwrap(), semver::Version::new(2, 4, 1));
    }

    #[test]
    fn bad_versions_digests_and_urls_are_refused() {
        let mut spec = spec();
        spec.version = "v2.4".into();
        spec.artifact.sha256 = "9F86D081".into();
        spec.artifact.url = "file:///etc/passwd".into();
        spec.artifact.size_bytes = 0;
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.version",
                "spec.artifact.url",
                "spec.artifact.sha256",
                "spec.artifact.sizeBytes"
            ]
        );
    }

    #[test]
    fn minimum_from_version_must_be_below_the_release() {
        let mut spec = spec();
        spec.minimum_from_version = Some("2.4.1".into());
        assert_eq!(
            spec.validate().unwrap_err()[0].field,
            "spec.minimumFromVersion"
        );
        spec.minimum_from_version = Some("two".into());
        assert_eq!(
            spec.validate().unwrap_err()[0].field,
            "spec.minimumFromVersion"
        );
    }

    #[test]
    fn sha256_digests() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
    }
}
