//! Prometheus metrics shared by every controller (documented in `docs/metrics.md`).

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramTimer, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::error::ErrorClass;

/// Reconcile-duration histogram buckets, in seconds: a reconcile is a handful of API calls, so
/// the interesting range is milliseconds to a few seconds; the tail catches a slow API server.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Busy-time histogram buckets, in seconds: the operator's own work in one reconcile (waiting
/// for the API server excluded) is expected in the tens of microseconds to a few milliseconds.
const BUSY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];

/// Counts objects by phase for one controller, on demand (at scrape time).
pub type PhaseCensus = Box<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>;

/// The operator's metrics registry and the metric families every controller reports into.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    busy: HistogramVec,
    phases: PhaseCollector,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with Flotilla's metric families registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "flotilla_reconciliations_total",
                "Reconcile attempts started, by controller.",
            ),
            &["controller"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "flotilla_reconcile_errors_total",
                "Reconcile attempts that failed, by controller and error class (transient, forbidden, permanent).",
            ),
            &["controller", "class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "flotilla_reconcile_duration_seconds",
                "Wall-clock duration of one reconcile attempt, by controller.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["controller"],
        )?;
        let busy = HistogramVec::new(
            HistogramOpts::new(
                "flotilla_reconcile_busy_seconds",
                "Time one reconcile attempt spent running on the operator's threads (waiting for the API server excluded), by controller.",
            )
            .buckets(BUSY_BUCKETS.to_vec()),
            &["controller"],
        )?;
        let phases = PhaseCollector::new()?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(busy.clone()))?;
        registry.register(Box::new(phases.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            errors,
            duration,
            busy,
            phases,
        })
    }

    /// The handles one controller reports through. Every error class starts at zero so that
    /// `rate()` and alerts see the series before the first failure.
    pub fn controller(&self, controller: &'static str) -> ControllerMetrics {
        for class in ErrorClass::ALL {
            self.errors
                .with_label_values(&[controller, class.metric_label()]);
        }
        ControllerMetrics {
            controller,
            reconciliations: self.reconciliations.with_label_values(&[controller]),
            errors: self.errors.clone(),
            duration: self.duration.with_label_values(&[controller]),
            busy: self.busy.with_label_values(&[controller]),
        }
    }

    /// Registers how to count `controller`'s objects by phase for
    /// `flotilla_objects_by_phase`. The census runs at scrape time, over the controller's
    /// cache, so the gauge is exact without bookkeeping on every reconcile.
    pub fn track_phases(
        &self,
        controller: &'static str,
        census: impl Fn() -> Vec<(&'static str, i64)> + Send + Sync + 'static,
    ) {
        self.phases.add(controller, Box::new(census));
    }

    /// Registers a gauge family whose series are counted at scrape time by `census` (label
    /// values in the order of `labels`, and the count): exact, with nothing kept up to date
    /// per reconcile, and a series that is gone (a deleted object) is gone from the next
    /// scrape.
    ///
    /// # Errors
    /// The family is malformed or already registered.
    pub fn register_census(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        census: impl Fn() -> Vec<(Vec<String>, i64)> + Send + Sync + 'static,
    ) -> Result<(), prometheus::Error> {
        let census = CensusCollector {
            gauge: IntGaugeVec::new(Opts::new(name, help), labels)?,
            census: Arc::new(census),
        };
        self.registry.register(Box::new(census))
    }

    /// The underlying registry, to register more collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|error| prometheus::Error::Msg(error.to_string()))
    }
}

/// The metric handles of one controller.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    controller: &'static str,
    reconciliations: IntCounter,
    errors: IntCounterVec,
    duration: Histogram,
    busy: Histogram,
}

impl ControllerMetrics {
    /// Counts a reconcile attempt and starts timing it; the duration is recorded when the
    /// returned timer is dropped, so early returns and errors are timed too.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciliations.inc();
        ReconcileTimer {
            _timer: self.duration.start_timer(),
        }
    }

    /// Records how long a reconcile attempt ran on the operator's threads: the time spent
    /// polling its future, so waits for the API server (and for caches) are left out.
    pub fn record_busy(&self, busy: std::time::Duration) {
        self.busy.observe(busy.as_secs_f64());
    }

    /// Counts a failed reconcile attempt.
    pub fn record_error(&self, class: ErrorClass) {
        self.errors
            .with_label_values(&[self.controller, class.metric_label()])
            .inc();
    }

    /// The `controller` label of these metrics.
    pub fn controller(&self) -> &'static str {
        self.controller
    }
}

/// Records one reconcile's duration when dropped.
#[must_use = "the duration is recorded when the timer is dropped"]
#[derive(Debug)]
pub struct ReconcileTimer {
    _timer: HistogramTimer,
}

/// `flotilla_objects_by_phase`: filled at scrape time from each controller's census.
#[derive(Clone)]
struct PhaseCollector {
    gauge: IntGaugeVec,
    censuses: Arc<Mutex<Vec<(&'static str, PhaseCensus)>>>,
}

impl PhaseCollector {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            gauge: IntGaugeVec::new(
                Opts::new(
                    "flotilla_objects_by_phase",
                    "Objects in the operator's cache, by controller and status.phase.",
                ),
                &["controller", "phase"],
            )?,
            censuses: Arc::default(),
        })
    }

    fn add(&self, controller: &'static str, census: PhaseCensus) {
        self.censuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((controller, census));
    }
}

impl Collector for PhaseCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let censuses = self.censuses.lock().unwrap_or_else(PoisonError::into_inner);
        // Start from scratch so that a phase nobody is in any more does not keep its last count.
        self.gauge.reset();
        for (controller, census) in censuses.iter() {
            for (phase, count) in census() {
                self.gauge
                    .with_label_values(&[controller, phase])
                    .set(count);
            }
        }
        self.gauge.collect()
    }
}

/// A gauge family filled at scrape time; see [`Metrics::register_census`].
#[derive(Clone)]
struct CensusCollector {
    gauge: IntGaugeVec,
    #[allow(clippy::type_complexity)]
    census: Arc<dyn Fn() -> Vec<(Vec<String>, i64)> + Send + Sync>,
}

impl Collector for CensusCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.reset();
        for (labels, count) in (self.census)() {
            let values: Vec<&str> = labels.iter().map(String::as_str).collect();
            match self.gauge.get_metric_with_label_values(&values) {
                Ok(gauge) => gauge.set(count),
                Err(error) => tracing::warn!(%error, "a census series with the wrong labels"),
            }
        }
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .map(|line| line[series.len()..].trim())
    }

    #[test]
    fn reconciliations_errors_and_durations_are_exported() {
        let metrics = Metrics::new().expect("metrics");
        let plan = metrics.controller("plan");
        drop(plan.reconcile_started());
        drop(plan.reconcile_started());
        plan.record_busy(std::time::Duration::from_micros(300));
        plan.record_error(ErrorClass::Transient);
        let text = metrics.render().expect("render");
        assert_eq!(
            sample(
                &text,
                r#"flotilla_reconciliations_total{controller="plan"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"flotilla_reconcile_errors_total{class="transient",controller="plan"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"flotilla_reconcile_errors_total{class="permanent",controller="plan"}"#
            ),
            Some("0"),
            "every class is exported from the start"
        );
        assert_eq!(
            sample(
                &text,
                r#"flotilla_reconcile_duration_seconds_count{controller="plan"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"flotilla_reconcile_busy_seconds_bucket{controller="plan",le="0.0005"}"#
            ),
            Some("1")
        );
    }

    #[test]
    fn a_census_is_counted_at_scrape_time_and_forgets_what_is_gone() {
        let metrics = Metrics::new().expect("metrics");
        let rows = Arc::new(Mutex::new(vec![(vec!["a".to_owned(), "x".to_owned()], 3)]));
        let read = Arc::clone(&rows);
        metrics
            .register_census("test_things", "Things.", &["name", "state"], move || {
                read.lock().unwrap().clone()
            })
            .expect("registered");
        let text = metrics.render().expect("render");
        assert_eq!(
            sample(&text, r#"test_things{name="a",state="x"}"#),
            Some("3")
        );
        *rows.lock().unwrap() = vec![(vec!["b".to_owned(), "y".to_owned()], 1)];
        let text = metrics.render().expect("render");
        assert_eq!(sample(&text, r#"test_things{name="a",state="x"}"#), None);
        assert_eq!(
            sample(&text, r#"test_things{name="b",state="y"}"#),
            Some("1")
        );
        assert!(
            metrics
                .register_census("test_things", "Again.", &["name"], Vec::new)
                .is_err()
        );
    }

    #[test]
    fn phases_are_counted_at_scrape_time() {
        let metrics = Metrics::new().expect("metrics");
        let ready = Arc::new(std::sync::atomic::AtomicI64::new(3));
        let seen = ready.clone();
        metrics.track_phases("plan", move || {
            vec![
                ("Ready", seen.load(std::sync::atomic::Ordering::SeqCst)),
                ("Invalid", 1),
            ]
        });
        let text = metrics.render().expect("render");
        assert_eq!(
            sample(
                &text,
                r#"flotilla_objects_by_phase{controller="plan",phase="Ready"}"#
            ),
            Some("3")
        );
        ready.store(5, std::sync::atomic::Ordering::SeqCst);
        let text = metrics.render().expect("render");
        assert_eq!(
            sample(
                &text,
                r#"flotilla_objects_by_phase{controller="plan",phase="Ready"}"#
            ),
            Some("5")
        );
        assert_eq!(
            sample(
                &text,
                r#"flotilla_objects_by_phase{controller="plan",phase="Invalid"}"#
            ),
            Some("1")
        );
    }
}
