//! What a simulated fleet is, and what each of its devices does: pure and deterministic
//! (from the seed and the device name), so a test knows in advance which devices fail.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// A simulated fleet: `flotilla simulate-devices` flags.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct FleetSpec {
    /// Base URL of the gateway's device API.
    #[arg(
        long,
        env = "FLOTILLA_GATEWAY_URL",
        default_value = "http://127.0.0.1:8443"
    )]
    pub gateway_url: String,
    /// Namespace of the Devices (the DDI tenant).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// How many devices.
    #[arg(long, default_value_t = 200)]
    pub devices: usize,
    /// Device names are the prefix and a zero-padded index: `sim-00042`.
    #[arg(long, default_value = "sim-")]
    pub name_prefix: String,
    /// Device tokens are derived from this seed and the name (`token_for`); so are the
    /// devices' models, failures and jitter.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Models with their shares of the fleet: `sensor-v2=3`, repeated.
    #[arg(long = "model", value_parser = parse_model_share, default_value = "sim-v1=1")]
    pub models: Vec<ModelShare>,
    /// The version every device runs at the start.
    #[arg(long, default_value = "1.0.0")]
    pub starting_version: String,
    /// How long an update takes on a device (download to reboot).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub update_duration: Duration,
    /// Each update takes up to this much longer, spread evenly over the devices.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub update_jitter: Duration,
    /// Share of updates that fail, 0–1.
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Failure rate of one model: `sensor-v2=0.5`, repeated; the highest applicable rate wins.
    #[arg(long = "model-failure-rate", value_parser = parse_rate)]
    pub model_failure_rates: Vec<ModelRate>,
    /// Failure rate of updates from one version: `1.0.0=1`, repeated.
    #[arg(long = "from-version-failure-rate", value_parser = parse_rate)]
    pub from_version_failure_rates: Vec<ModelRate>,
    /// The device's status code sent with a failure (becomes `error.code`).
    #[arg(long, default_value_t = 1001)]
    pub failure_code: i64,
    /// Share of devices that never poll.
    #[arg(long, default_value_t = 0.0)]
    pub offline_share: f64,
    /// Share of devices whose updates take `slow_factor` times as long.
    #[arg(long, default_value_t = 0.0)]
    pub slow_share: f64,
    #[arg(long, default_value_t = 5.0)]
    pub slow_factor: f64,
    /// Share of devices that reboot again and again after an update (reported as a rising
    /// `bootCount` attribute through configData).
    #[arg(long, default_value_t = 0.0)]
    pub reboot_loop_share: f64,
    /// How many reboots a looping device reports, one per poll.
    #[arg(long, default_value_t = 5)]
    pub reboot_loop_boots: u32,
    /// Progress reports per update (`proceeding` with `{cnt, of}`).
    #[arg(long, default_value_t = 4)]
    pub progress_steps: u32,
    /// Download the artifact URL of a deployment (off: the simulated download only waits).
    #[arg(long)]
    pub download_artifacts: bool,
    /// Most HTTP requests in flight at once over the whole fleet.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight_requests: usize,
    /// Devices make their first poll at a time drawn over this span, so a large fleet
    /// started at once does not poll in one burst.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub start_spread: Duration,
    /// Free space devices report, in bytes.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub free_space_bytes: u64,
}

impl Default for FleetSpec {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            spec: FleetSpec,
        }
        Defaults::parse_from(["simulate-devices"]).spec
    }
}

/// A model and its share of the fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShare {
    pub model: String,
    pub share: u32,
}

/// A failure rate keyed by model or from-version.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRate {
    pub key: String,
    pub rate: f64,
}

fn parse_model_share(text: &str) -> Result<ModelShare, String> {
    let (model, share) = text
        .split_once('=')
        .ok_or_else(|| format!("expected MODEL=SHARE, got {text:?}"))?;
    let share: u32 = share
        .parse()
        .map_err(|_| format!("the share of {model:?} is not a whole number: {share:?}"))?;
    if model.is_empty() || share == 0 {
        return Err(format!(
            "expected a model and a positive share, got {text:?}"
        ));
    }
    Ok(ModelShare {
        model: model.to_owned(),
        share,
    })
}

fn parse_rate(text: &str) -> Result<ModelRate, String> {
    let (key, rate) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=RATE, got {text:?}"))?;
    let rate: f64 = rate.parse().map_err(|_| format!("not a rate: {rate:?}"))?;
    if key.is_empty() || !(0.0..=1.0).contains(&rate) {
        return Err(format!(
            "expected a key and a rate from 0 to 1, got {text:?}"
        ));
    }
    Ok(ModelRate {
        key: key.to_owned(),
        rate,
    })
}

/// `10s`, `500ms`, `2m 30s` (jiff's friendly format) or ISO 8601 (`PT10S`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration: jiff::SignedDuration = text.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from(duration).map_err(|_| format!("a duration cannot be negative: {text:?}"))
}

/// The token of a simulated device: the SHA-256 hex of the seed and its name, so whoever
/// provisions the fleet and the simulator agree without sharing a file.
pub fn token_for(seed: u64, name: &str) -> String {
    hex::encode(Sha256::digest(format!("flotilla-simulator/{seed}/{name}")))
}

/// What the token Secret holds: the SHA-256 hex of the token, as the gateway checks it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A uniform fraction in [0, 1) from the seed, the device and what is being decided.
pub(crate) fn fraction(seed: u64, name: &str, what: &str) -> f64 {
    let digest = Sha256::digest(format!("{seed}/{name}/{what}"));
    let bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// One simulated device, as the spec makes it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceProfile {
    pub name: String,
    pub model: String,
    pub offline: bool,
    pub slow: bool,
    pub reboot_loop: bool,
}

impl FleetSpec {
    /// The name of device `index`: wide enough for the fleet so names sort by index.
    pub fn device_name(&self, index: usize) -> String {
        let width = self
            .devices
            .saturating_sub(1)
            .max(1)
            .to_string()
            .len()
            .max(4);
        format!("{}{index:0width$}", self.name_prefix)
    }

    /// Device `index`. Models are dealt in proportion to their shares by index (exact
    /// counts, not sampled); the other traits are drawn per device.
    pub fn profile(&self, index: usize) -> DeviceProfile {
        let name = self.device_name(index);
        let total: u64 = self.models.iter().map(|m| u64::from(m.share)).sum();
        let model = if total == 0 {
            "sim-v1".to_owned()
        } else {
            let mut slot = index as u64 % total;
            self.models
                .iter()
                .find(|m| {
                    let here = slot < u64::from(m.share);
                    slot = slot.saturating_sub(u64::from(m.share));
                    here
                })
                .map(|m| m.model.clone())
                .expect("slot below total")
        };
        DeviceProfile {
            offline: fraction(self.seed, &name, "offline") < self.offline_share,
            slow: fraction(self.seed, &name, "slow") < self.slow_share,
            reboot_loop: fraction(self.seed, &name, "reboot-loop") < self.reboot_loop_share,
            model,
            name,
        }
    }

    /// Every device's profile, in index order.
    pub fn profiles(&self) -> impl Iterator<Item = DeviceProfile> + '_ {
        (0..self.devices).map(|index| self.profile(index))
    }

    /// The failure rate of an update of `model` from `from_version`: the highest of the
    /// overall, the model's and the from-version's.
    pub fn failure_rate_of(&self, model: &str, from_version: &str) -> f64 {
        let by = |rates: &[ModelRate], key: &str| {
            rates
                .iter()
                .filter(|r| r.key == key)
                .map(|r| r.rate)
                .fold(0.0, f64::max)
        };
        self.failure_rate
            .max(by(&self.model_failure_rates, model))
            .max(by(&self.from_version_failure_rates, from_version))
    }

    /// Whether `device`'s update of action `action_id` from `from_version` fails. Fixed per
    /// action, so a retried action (a new id) may succeed.
    pub fn update_fails(
        &self,
        device: &DeviceProfile,
        from_version: &str,
        action_id: &str,
    ) -> bool {
        let rate = self.failure_rate_of(&device.model, from_version);
        rate >= 1.0 || fraction(self.seed, &device.name, &format!("fail/{action_id}")) < rate
    }

    /// How long `device`'s update takes.
    pub fn update_time(&self, device: &DeviceProfile) -> Duration {
        let jitter = self
            .update_jitter
            .mul_f64(fraction(self.seed, &device.name, "update-jitter"));
        let time = self.update_duration + jitter;
        if device.slow {
            time.mul_f64(self.slow_factor.max(1.0))
        } else {
            time
        }
    }

    /// The models and how many devices of each, as `profile` deals them.
    pub fn model_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for profile in self.profiles() {
            *counts.entry(profile.model).or_default() += 1;
        }
        counts
    }
}

/// DDI's `HH:MM:SS` polling sleep; `None` when malformed.
pub fn parse_sleep(text: &str) -> Option<Duration> {
    let mut parts = text.trim().split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (h, m, s): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?);
    if m >= 60 || s >= 60 {
        return None;
    }
    // Hours come from the server: a huge count is malformed, not an overflow.
    let seconds = h.checked_mul(3600)?.checked_add(m * 60 + s)?;
    Some(Duration::from_secs(seconds))
}

/// The sleep before the next poll: DDI's sleep less up to 20 % drawn per device and poll, so
/// a fleet started at once spreads out instead of polling in lockstep (never longer than the
/// server asked).
pub(crate) fn jittered(sleep: Duration, seed: u64, name: &str, poll: u64) -> Duration {
    let cut = fraction(seed, name, &format!("poll/{poll}")) * 0.2;
    sleep.mul_f64(1.0 - cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> FleetSpec {
        FleetSpec {
            devices: 10,
            ..FleetSpec::default()
        }
    }

    #[test]
    fn flags_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            spec: FleetSpec,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--devices",
            "3",
            "--model",
            "a=3",
            "--model",
            "b=1",
            "--model-failure-rate",
            "b=1",
            "--update-duration",
            "250ms",
        ])
        .unwrap();
        assert_eq!(cli.spec.devices, 3);
        assert_eq!(cli.spec.models.len(), 2);
        assert_eq!(cli.spec.model_failure_rates[0].rate, 1.0);
        assert_eq!(cli.spec.update_duration, Duration::from_millis(250));
        assert!(Cli::try_parse_from(["x", "--model", "a=0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--model-failure-rate", "a=1.5"]).is_err());
        assert!(Cli::try_parse_from(["x", "--update-duration", "-1s"]).is_err());
    }

    #[test]
    fn models_are_dealt_by_share() {
        let spec = FleetSpec {
            devices: 100,
            models: vec![
                ModelShare {
                    model: "a".into(),
                    share: 3,
                },
                ModelShare {
                    model: "b".into(),
                    share: 1,
                },
            ],
            ..FleetSpec::default()
        };
        let counts = spec.model_counts();
        assert_eq!(counts["a"], 75);
        assert_eq!(counts["b"], 25);
        assert_eq!(spec.device_name(7), "sim-0007");
    }

    #[test]
    fn failure_rates_take_the_highest_applicable() {
        let spec = FleetSpec {
            failure_rate: 0.1,
            model_failure_rates: vec![ModelRate {
                key: "b".into(),
                rate: 1.0,
            }],
            from_version_failure_rates: vec![ModelRate {
                key: "0.9.0".into(),
                rate: 0.5,
            }],
            ..spec()
        };
        assert_eq!(spec.failure_rate_of("a", "1.0.0"), 0.1);
        assert_eq!(spec.failure_rate_of("a", "0.9.0"), 0.5);
        assert_eq!(spec.failure_rate_of("b", "0.9.0"), 1.0);
        let device = DeviceProfile {
            name: "x".into(),
            model: "b".into(),
            offline: false,
            slow: false,
            reboot_loop: false,
        };
        assert!((0..50).all(|a| spec.update_fails(&device, "1.0.0", &a.to_string())));
    }

    #[test]
    fn tokens_are_stable_and_distinct() {
        assert_eq!(token_for(1, "a"), token_for(1, "a"));
        assert_ne!(token_for(1, "a"), token_for(2, "a"));
        assert_ne!(token_for(1, "a"), token_for(1, "b"));
        assert_eq!(
            token_hash("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn sleeps_parse() {
        assert_eq!(parse_sleep("00:00:30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_sleep("01:05:05"), Some(Duration::from_secs(3905)));
        assert_eq!(parse_sleep("100:00:00"), Some(Duration::from_secs(360_000)));
        assert_eq!(parse_sleep("00:61:00"), None);
        assert_eq!(parse_sleep("30"), None);
        // More hours than a u64 of seconds holds (found reviewing the parsers for fuzzing).
        assert_eq!(parse_sleep("18446744073709551615:00:00"), None);
    }

    #[test]
    fn a_fleet_spreads_its_polls() {
        let sleep = Duration::from_secs(100);
        let mut sleeps: Vec<_> = (0..100)
            .map(|i| jittered(sleep, 0, &format!("d{i}"), 0))
            .collect();
        sleeps.sort();
        sleeps.dedup();
        assert!(sleeps.len() > 90, "polls in lockstep: {sleeps:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn shares_draw_close_to_their_rate(seed in 0u64..1000, share in 0.0f64..1.0) {
            let spec = FleetSpec { devices: 2000, seed, offline_share: share, ..FleetSpec::default() };
            let offline = spec.profiles().filter(|p| p.offline).count() as f64 / 2000.0;
            prop_assert!((offline - share).abs() < 0.05, "{offline} vs {share}");
        }

        #[test]
        fn jitter_never_sleeps_longer_than_asked(secs in 0u64..100_000, poll in 0u64..1000) {
            let sleep = Duration::from_secs(secs);
            let jittered = jittered(sleep, 3, "d", poll);
            prop_assert!(jittered <= sleep && jittered >= sleep.mul_f64(0.79));
        }

        #[test]
        fn update_time_is_within_its_jitter(ms in 0u64..100_000, jitter in 0u64..10_000) {
            let spec = FleetSpec {
                update_duration: Duration::from_millis(ms),
                update_jitter: Duration::from_millis(jitter),
                ..FleetSpec::default()
            };
            let device = spec.profile(0);
            let time = spec.update_time(&device);
            prop_assert!(time >= spec.update_duration && time <= spec.update_duration + spec.update_jitter);
        }
    }
}
