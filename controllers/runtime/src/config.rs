//! Operator-wide tuning knobs, shared by every controller.

use flotilla_crds::common::GoDuration;
use std::time::Duration;

/// How the controllers run. One value for the whole process; `flotilla run` fills it from flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How many objects one controller reconciles at the same time. kube-runtime's default is
    /// unbounded, which lets a burst of events open as many API requests as there are objects.
    pub concurrency: u16,
    /// First retry delay after a transient reconcile error.
    pub backoff_base: Duration,
    /// Longest retry delay after repeated transient errors, jitter included.
    pub backoff_cap: Duration,
    /// Shortest retry delay after a `403 Forbidden` (missing RBAC, a ResourceQuota refusal):
    /// such errors heal only when someone acts, so they are retried slowly; later retries grow
    /// with the same per-object backoff, up to `backoff_cap`.
    pub forbidden_backoff: Duration,
    /// How often an object that is in shape is reconciled again even without a watch event: a
    /// safety net against missed events, not a polling loop.
    pub resync_interval: Duration,
    /// Objects per page when a watcher (re-)lists.
    pub watch_page_size: u32,
    /// How long a controller whose reconcile writes several children waits after the last
    /// event about an object before reconciling it (kube-runtime's trailing-edge debounce):
    /// the watch events of its own writes, arriving one request apart, then wake one more
    /// reconcile instead of several. Zero reconciles at once.
    pub debounce: Duration,
    /// The `reportingController` of the Events the operator publishes.
    pub reporting_controller: String,
    /// The `reportingInstance` of Events (the pod name in a cluster); the hostname when unset.
    pub reporting_instance: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            concurrency: 16,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(300),
            forbidden_backoff: Duration::from_secs(30),
            resync_interval: Duration::from_secs(3600),
            watch_page_size: 500,
            debounce: Duration::from_millis(100),
            reporting_controller: "flotilla.dev/operator".to_owned(),
            reporting_instance: None,
        }
    }
}

/// Parses a duration as the CRDs' `metav1.Duration` fields and the chart's values write them:
/// one or more `<number><unit>` with units `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h` and
/// optional decimals, e.g. `500ms`, `5m`, `1h30m`, `1.5s`; `0` alone is zero. One grammar for
/// flags, Helm values and objects: [`GoDuration`]'s. Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<GoDuration>()
        .map(|duration| duration.as_std())
        .map_err(|error| format!("invalid duration: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("0", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("250us", Duration::from_micros(250)),
            ("10µs", Duration::from_micros(10)),
            ("3ns", Duration::from_nanos(3)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in [
            "", "5", "m", "-5s", "5 m", "1.s", ".5s", "5mins", "1h-30m", "5sx", "2562048h",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn defaults_are_bounded() {
        let config = Config::default();
        assert!(
            config.concurrency > 0,
            "0 would mean unbounded in kube-runtime"
        );
        assert!(config.backoff_base < config.backoff_cap);
        assert!(config.watch_page_size > 0);
    }
}
