//! Helpers for controller tests, the scenario suite and benchmarks: waiting for the world to
//! reach a state by polling with a deadline, never by sleeping a fixed time.

use std::future::Future;
use std::time::Duration;

/// How often [`wait_for`] polls.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A wait that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}")]
pub struct WaitTimedOut {
    /// What was awaited.
    pub what: String,
    /// How long.
    pub timeout: Duration,
}

/// Polls `probe` until it returns `Some`, or fails after `timeout`.
///
/// Errors inside the probe (say, a `get` hitting an injected fault) are the probe's to turn into
/// `None`: the wait is about the state of the world, not about one request.
pub async fn wait_for<T, F, Fut>(
    what: impl Into<String>,
    timeout: Duration,
    mut probe: F,
) -> Result<T, WaitTimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitTimedOut {
                what: what.into(),
                timeout,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_as_soon_as_the_probe_succeeds() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let value = wait_for("third call", Duration::from_secs(5), move || {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            async move { (n == 3).then_some(n) }
        })
        .await
        .expect("in time");
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn times_out_with_a_description() {
        let error = wait_for("never", Duration::from_millis(60), || async { None::<()> })
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "timed out after 60ms waiting for never");
    }
}
