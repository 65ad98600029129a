//! Operator-wide tuning knobs, shared by every controller.

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

/// Parses a duration the way Go's `time.ParseDuration` (and so Helm values and `metav1.Duration`)
/// writes them: one or more `<number><unit>` with units `ns`, `us` (or `µs`), `ms`, `s`, `m`,
/// `h` and optional decimals, e.g. `500ms`, `5m`, `1h30m`, `1.5s`; `0` alone is zero. Negative
/// durations are refused: no knob here means anything negative.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 5m or 1h30m");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        let part = Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| invalid())?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = next;
    }
    Ok(total)
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
            "", "5", "m", "-5s", "5 m", "1.s", ".5s", "5mins", "1h-30m", "5sx",
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
