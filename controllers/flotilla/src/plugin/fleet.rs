//! `kubectl flotilla fleet versions [-l SELECTOR]`: which firmware the fleet runs, as a table
//! of model × current version, with how many devices are updating, failed or offline. Devices
//! are listed in pages of [`PAGE_SIZE`]; [`FleetVersions`] is the pure aggregation.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context as _;
use flotilla_crds::device::UpdateState;
use flotilla_crds::{Device, DevicePhase};
use kube::Api;
use kube::api::ListParams;

use super::table::Table;

/// Devices per list request.
pub const PAGE_SIZE: u32 = 500;
/// The column of devices that report no version.
pub const UNKNOWN_VERSION: &str = "<none>";

/// Device counts by model and current version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetVersions {
    models: BTreeMap<String, ModelCounts>,
}

/// One model's devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelCounts {
    /// Devices by `status.currentVersion` ([`UNKNOWN_VERSION`] when unset).
    pub versions: BTreeMap<String, u64>,
    /// Devices of the model.
    pub total: u64,
    /// Phase Updating, or an update in progress.
    pub updating: u64,
    /// Latest update Failed.
    pub failed: u64,
    /// Phase Offline.
    pub offline: u64,
}

impl FleetVersions {
    /// Counts one device.
    pub fn add(&mut self, device: &Device) {
        let counts = self.models.entry(device.spec.model.clone()).or_default();
        let status = device.status.as_ref();
        let version = status
            .and_then(|s| s.current_version.clone())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| UNKNOWN_VERSION.to_owned());
        *counts.versions.entry(version).or_default() += 1;
        counts.total += 1;
        let phase = status.and_then(|s| s.phase);
        let state = status.and_then(|s| s.update.as_ref()).map(|u| u.state);
        if phase == Some(DevicePhase::Updating) || state.is_some_and(UpdateState::is_in_progress) {
            counts.updating += 1;
        }
        if state == Some(UpdateState::Failed) {
            counts.failed += 1;
        }
        if phase == Some(DevicePhase::Offline) {
            counts.offline += 1;
        }
    }

    /// The counts of each model, by model name.
    pub fn models(&self) -> &BTreeMap<String, ModelCounts> {
        &self.models
    }

    /// Every version any device runs: semantic versions in version order, then the others
    /// by name, then [`UNKNOWN_VERSION`].
    pub fn versions(&self) -> Vec<String> {
        let mut versions: Vec<String> = self
            .models
            .values()
            .flat_map(|m| m.versions.keys().cloned())
            .collect();
        versions.sort_by(|a, b| version_order(a, b));
        versions.dedup();
        versions
    }

    /// All models together.
    pub fn totals(&self) -> ModelCounts {
        let mut totals = ModelCounts::default();
        for counts in self.models.values() {
            for (version, n) in &counts.versions {
                *totals.versions.entry(version.clone()).or_default() += n;
            }
            totals.total += counts.total;
            totals.updating += counts.updating;
            totals.failed += counts.failed;
            totals.offline += counts.offline;
        }
        totals
    }

    /// The table: a row per model and a TOTAL row; a column per version, then TOTAL,
    /// UPDATING, FAILED and OFFLINE.
    pub fn render(&self) -> String {
        if self.models.is_empty() {
            return "No devices found.\n".to_owned();
        }
        let versions = self.versions();
        let mut table = Table::new(
            std::iter::once("MODEL".to_owned())
                .chain(versions.iter().cloned())
                .chain(["TOTAL", "UPDATING", "FAILED", "OFFLINE"].map(str::to_owned)),
        );
        let row = |model: &str, counts: &ModelCounts| {
            std::iter::once(model.to_owned())
                .chain(
                    versions
                        .iter()
                        .map(|v| counts.versions.get(v).copied().unwrap_or(0).to_string()),
                )
                .chain(
                    [counts.total, counts.updating, counts.failed, counts.offline]
                        .map(|n| n.to_string()),
                )
                .collect::<Vec<_>>()
        };
        for (model, counts) in &self.models {
            table.row(row(model, counts));
        }
        table.row(row("TOTAL", &self.totals()));
        table.render("")
    }
}

impl<'a> FromIterator<&'a Device> for FleetVersions {
    fn from_iter<I: IntoIterator<Item = &'a Device>>(devices: I) -> Self {
        let mut fleet = FleetVersions::default();
        for device in devices {
            fleet.add(device);
        }
        fleet
    }
}

fn version_order(a: &str, b: &str) -> Ordering {
    let key = |v: &str| {
        (
            v == UNKNOWN_VERSION,
            semver::Version::parse(v.trim_start_matches('v')).ok(),
        )
    };
    let ((a_unknown, a_semver), (b_unknown, b_semver)) = (key(a), key(b));
    a_unknown
        .cmp(&b_unknown)
        .then_with(|| match (a_semver, b_semver) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.cmp(b))
}

/// Lists the namespace's Devices (matching `selector`) page by page and prints the table.
pub async fn versions(
    client: &kube::Client,
    namespace: &str,
    selector: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let api: Api<Device> = Api::namespaced(client.clone(), namespace);
    let mut fleet = FleetVersions::default();
    let mut params = ListParams::default().limit(PAGE_SIZE);
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    loop {
        let page = api
            .list(&params)
            .await
            .with_context(|| format!("listing the Devices of namespace {namespace:?}"))?;
        page.items.iter().for_each(|device| fleet.add(device));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    out.write_all(fleet.render().as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device(i: usize, model: &str, status: serde_json::Value) -> Device {
        serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
            "metadata": {"name": format!("d-{i}"), "namespace": "fleet"},
            "spec": {"model": model},
            "status": status,
        }))
        .unwrap()
    }

    /// 1,000 devices: sensor-v2 on 1.0.0 / 1.1.0 / 1.10.0 / none, gateway-v1 on 1.0.0 and 0.9.0,
    /// with updating, failed and offline ones scattered over both.
    fn fleet() -> Vec<Device> {
        (0..1000)
            .map(|i| {
                let model = if i % 4 == 0 {
                    "gateway-v1"
                } else {
                    "sensor-v2"
                };
                let version = match (model, i % 10) {
                    ("gateway-v1", 0..=1) => Some("0.9.0"),
                    ("gateway-v1", _) => Some("1.0.0"),
                    (_, 0..=4) => Some("1.0.0"),
                    (_, 5..=7) => Some("1.1.0"),
                    (_, 8) => Some("1.10.0"),
                    _ => None,
                };
                let mut status = json!({});
                if let Some(version) = version {
                    status["currentVersion"] = json!(version);
                }
                match i % 50 {
                    1 | 2 => {
                        status["phase"] = json!("Updating");
                        status["update"] = json!({"state": "Downloading"});
                    }
                    3 => status["update"] = json!({"state": "Installing"}),
                    5 => {
                        status["phase"] = json!("Online");
                        status["update"] = json!({"state": "Failed", "error": {"code": "1001"}});
                    }
                    7 => status["phase"] = json!("Offline"),
                    _ => {}
                }
                device(i, model, status)
            })
            .collect()
    }

    #[test]
    fn devices_aggregate_by_model_and_version() {
        let devices = fleet();
        let fleet: FleetVersions = devices.iter().collect();
        assert_eq!(
            fleet.versions(),
            ["0.9.0", "1.0.0", "1.1.0", "1.10.0", "<none>"]
        );
        let gateway = &fleet.models()["gateway-v1"];
        assert_eq!(gateway.total, 250);
        assert_eq!(gateway.versions["0.9.0"], 50);
        assert_eq!(gateway.versions["1.0.0"], 200);
        let sensor = &fleet.models()["sensor-v2"];
        assert_eq!(sensor.total, 750);
        assert_eq!(
            sensor.versions.values().sum::<u64>(),
            750,
            "every device is in one version column"
        );
        let totals = fleet.totals();
        assert_eq!(totals.total, 1000);
        // Per 50 devices: two Updating by phase, one Installing without it.
        assert_eq!(totals.updating, 60);
        assert_eq!(totals.failed, 20);
        assert_eq!(totals.offline, 20);
        assert_eq!(
            totals.updating,
            gateway.updating + sensor.updating,
            "totals sum the models"
        );
    }

    #[test]
    fn the_table_has_a_column_per_version_and_a_total_row() {
        let text = fleet().iter().collect::<FleetVersions>().render();
        assert_eq!(
            text,
            "\
MODEL       0.9.0  1.0.0  1.1.0  1.10.0  <none>  TOTAL  UPDATING  FAILED  OFFLINE
gateway-v1  50     200    0      0       0       250    10        0       0
sensor-v2   0      350    250    50      100     750    50        20      20
TOTAL       50     550    250    50      100     1000   60        20      20
"
        );
    }

    #[test]
    fn an_empty_fleet_says_so() {
        assert_eq!(FleetVersions::default().render(), "No devices found.\n");
    }

    #[test]
    fn versions_sort_semantically_then_by_name() {
        let mut versions = vec![
            "1.10.0",
            "<none>",
            "banana",
            "1.2.0",
            "v1.3.0",
            "1.2.0-rc.1",
        ];
        versions.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            versions,
            [
                "1.2.0-rc.1",
                "1.2.0",
                "v1.3.0",
                "1.10.0",
                "banana",
                "<none>"
            ]
        );
    }
}
