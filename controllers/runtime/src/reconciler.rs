//! The parts of `reconcile` and `error_policy` that are the same for every controller.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::context::Context;
use super::error::{ControllerError, ErrorClass};
use super::events;

/// Runs one reconcile of `object` with what every reconcile needs: a span carrying the object
/// reference (kind, namespace, name), the object taken off the queue, the reconcile counter
/// and duration histogram, a backoff reset on success, and on failure the error counter by
/// class, a log line, and a Warning Event on the object for failures a person must act on —
/// permanent ones, and the first forbidden one of a streak (the retries that follow would
/// only repeat it).
pub async fn observe<K, S, E>(
    ctx: &Context<S>,
    object: &K,
    reconcile: impl Future<Output = Result<Action, E>>,
) -> Result<Action, E>
where
    K: Resource<DynamicType = ()>,
    E: ControllerError,
{
    let span = tracing::info_span!(
        "reconcile",
        controller = ctx.controller(),
        kind = %K::kind(&()),
        namespace = object.meta().namespace.as_deref().unwrap_or(""),
        name = %object.name_any(),
    );
    async move {
        ctx.queue.started(object);
        let _timer = ctx.metrics.reconcile_started();
        // The time spent polling the reconcile is the operator's own work; the time between
        // polls is spent waiting (for the API server, for a cache).
        let mut reconcile = std::pin::pin!(reconcile);
        let mut busy = Duration::ZERO;
        let result = std::future::poll_fn(|cx| {
            let started = Instant::now();
            let polled = reconcile.as_mut().poll(cx);
            busy += started.elapsed();
            polled
        })
        .await;
        ctx.metrics.record_busy(busy);
        match &result {
            Ok(action) => {
                ctx.backoff.reset(&backoff_key(object));
                tracing::debug!(?action, "reconciled");
            }
            Err(error) => {
                let class = error.class();
                ctx.metrics.record_error(class);
                let warn = match class {
                    ErrorClass::Transient => {
                        tracing::warn!(%error, class = class.metric_label(), reason = error.reason(), "reconcile failed; will retry");
                        false
                    }
                    ErrorClass::Forbidden => {
                        tracing::error!(%error, class = class.metric_label(), reason = error.reason(), "reconcile forbidden; will retry slowly");
                        // The error policy has not counted this failure yet: no attempts
                        // means the streak begins here.
                        ctx.backoff.attempts(&backoff_key(object)) == 0
                    }
                    ErrorClass::Permanent => {
                        tracing::error!(%error, class = class.metric_label(), reason = error.reason(), "reconcile failed; waiting for a change");
                        true
                    }
                };
                if warn {
                    events::publish(
                        &ctx.recorder,
                        object,
                        EventType::Warning,
                        error.reason(),
                        "Reconcile",
                        error.event_note(),
                    )
                    .await;
                }
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// The error policy of every controller: transient errors retry after the object's next
/// backoff delay, never sooner than a `Retry-After` the server sent; forbidden errors the same,
/// but never sooner than `Config::forbidden_backoff`; permanent errors wait for the object to
/// change. Retries are put on the controller's [`crate::queue`].
pub fn error_policy<K, S, E>(object: Arc<K>, error: &E, ctx: Arc<Context<S>>) -> Action
where
    K: Resource,
    E: ControllerError,
{
    let key = backoff_key(object.as_ref());
    let floor = match error.class() {
        ErrorClass::Transient => Duration::ZERO,
        ErrorClass::Forbidden => ctx.config.forbidden_backoff,
        ErrorClass::Permanent => {
            ctx.backoff.reset(&key);
            return Action::await_change();
        }
    };
    let delay = ctx
        .backoff
        .next_delay(&key)
        .max(floor)
        .max(error.retry_after().unwrap_or(Duration::ZERO));
    ctx.queue.retry(object.as_ref(), delay);
    Action::requeue(delay)
}

/// Backoff state is per object: the UID, so that a deleted and re-created object starts
/// fresh, falling back to the name for objects the server has not assigned one yet.
fn backoff_key<K: Resource>(object: &K) -> String {
    match &object.meta().uid {
        Some(uid) => uid.clone(),
        None => format!(
            "{}/{}",
            object.meta().namespace.as_deref().unwrap_or(""),
            object.meta().name.as_deref().unwrap_or("")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::context::Operator;
    use crate::shutdown::Shutdown;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[derive(Debug, thiserror::Error)]
    #[error("test failure ({0})")]
    struct Failure(ErrorClass, Option<Duration>);

    impl ControllerError for Failure {
        fn class(&self) -> ErrorClass {
            self.0
        }
        fn reason(&self) -> &'static str {
            "TestFailure"
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    /// A context whose client points nowhere (nothing here reaches a server except best-effort
    /// Events) and whose backoff is exactly one second, jitter included, so actions compare.
    fn context() -> Arc<Context<()>> {
        operator_and_context().1
    }

    fn operator_and_context() -> (Operator, Arc<Context<()>>) {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        crate::crypto::use_ring();
        let client = kube::Client::try_from(config).expect("client");
        let operator = Operator::new(
            client,
            Config {
                backoff_base: Duration::from_secs(1),
                backoff_cap: Duration::from_secs(1),
                ..Config::default()
            },
            Arc::new(SystemClock),
            Shutdown::new(),
        )
        .expect("operator");
        let ctx = operator.context("test", ());
        (operator, ctx)
    }

    fn object() -> Arc<ConfigMap> {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("cm".into());
        cm.metadata.namespace = Some("default".into());
        cm.metadata.uid = Some("uid-1".into());
        Arc::new(cm)
    }

    #[tokio::test]
    async fn transient_errors_requeue_after_the_backoff_and_count_attempts() {
        let ctx = context();
        let action = error_policy(object(), &Failure(ErrorClass::Transient, None), ctx.clone());
        assert_eq!(action, Action::requeue(Duration::from_secs(1)));
        error_policy(object(), &Failure(ErrorClass::Transient, None), ctx.clone());
        assert_eq!(ctx.backoff.attempts("uid-1"), 2);
        assert_eq!(ctx.queue.retries_scheduled(), 1, "one slot per object");
    }

    #[tokio::test]
    async fn a_servers_retry_after_is_never_undercut() {
        let ctx = context();
        let throttled = Failure(ErrorClass::Transient, Some(Duration::from_secs(7)));
        assert_eq!(
            error_policy(object(), &throttled, ctx),
            Action::requeue(Duration::from_secs(7))
        );
    }

    #[tokio::test]
    async fn permanent_errors_wait_for_a_change() {
        let ctx = context();
        error_policy(object(), &Failure(ErrorClass::Transient, None), ctx.clone());
        // The retry runs (and leaves the queue), and fails for good.
        ctx.queue.started(object().as_ref());
        let action = error_policy(object(), &Failure(ErrorClass::Permanent, None), ctx.clone());
        assert_eq!(action, Action::await_change());
        assert_eq!(
            ctx.backoff.attempts("uid-1"),
            0,
            "a streak ends with a non-retried error"
        );
        assert!(ctx.queue.is_empty(), "nothing is scheduled");
    }

    #[tokio::test]
    async fn forbidden_errors_retry_no_sooner_than_the_forbidden_backoff() {
        let ctx = context();
        let action = error_policy(object(), &Failure(ErrorClass::Forbidden, None), ctx.clone());
        assert_eq!(action, Action::requeue(Config::default().forbidden_backoff));
        assert_eq!(ctx.backoff.attempts("uid-1"), 1, "the streak is counted");
        assert_eq!(
            ctx.queue.retries_scheduled(),
            1,
            "the retry is on the queue"
        );
    }

    #[tokio::test]
    async fn observe_counts_and_resets() {
        let (operator, ctx) = operator_and_context();
        ctx.backoff.next_delay("uid-1");
        let cm = object();
        let ok: Result<Action, Failure> =
            observe(&ctx, cm.as_ref(), async { Ok(Action::await_change()) }).await;
        assert!(ok.is_ok());
        assert_eq!(
            ctx.backoff.attempts("uid-1"),
            0,
            "success resets the backoff"
        );

        let failed = observe(&ctx, cm.as_ref(), async {
            Err::<Action, _>(Failure(ErrorClass::Transient, None))
        })
        .await;
        assert!(failed.is_err());
        let text = operator.metrics.render().expect("metrics");
        assert!(
            text.contains(r#"flotilla_reconciliations_total{controller="test"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flotilla_reconcile_errors_total{class="transient",controller="test"} 1"#
            ),
            "{text}"
        );
    }
}
