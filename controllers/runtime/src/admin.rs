//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::metrics::Metrics;
use super::readiness::Readiness;
use super::shutdown::Shutdown;

/// What the admin endpoints report on.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// Rendered at `/metrics`.
    pub metrics: Metrics,
    /// Consulted by `/readyz`.
    pub readiness: Readiness,
    /// While draining, `/readyz` fails so that traffic and leadership move elsewhere.
    pub shutdown: Shutdown,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Binds `addr` and serves the admin routes until `shutdown` trips. Returns the bound address
/// (useful with port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let stop = state.shutdown.signalled();
    let app = router(state);
    tracing::info!(address = %local, "admin server listening (/metrics, /healthz, /readyz)");
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
    });
    Ok((local, task))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Alive as long as the process serves HTTP: restarting would not fix a slow API server, so
/// liveness deliberately checks nothing else.
async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.shutdown.is_triggered() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let report = state.readiness.report();
    if report.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else if report.registered == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no controller started yet\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for caches: {}\n", report.pending.join(", ")),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start() -> (String, AdminState) {
        let state = AdminState {
            metrics: Metrics::new().expect("metrics"),
            readiness: Readiness::new(),
            shutdown: Shutdown::new(),
        };
        let (addr, _task) = serve("127.0.0.1:0".parse().expect("addr"), state.clone())
            .await
            .expect("serve");
        (format!("http://{addr}"), state)
    }

    async fn get(url: String) -> (u16, String) {
        let response = reqwest::get(url).await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let (base, state) = start().await;
        assert_eq!(get(format!("{base}/healthz")).await, (200, "ok".to_owned()));

        let cache = state.readiness.register("plans");
        let (code, body) = get(format!("{base}/readyz")).await;
        assert_eq!(code, 503);
        assert!(body.contains("plans"), "{body}");
        cache.mark_ready();
        assert_eq!(get(format!("{base}/readyz")).await.0, 200);

        let plan = state.metrics.controller("plan");
        drop(plan.reconcile_started());
        let (code, body) = get(format!("{base}/metrics")).await;
        assert_eq!(code, 200);
        assert!(
            body.contains(r#"flotilla_reconciliations_total{controller="plan"} 1"#),
            "{body}"
        );

        state.shutdown.trigger();
        // The server stops accepting after shutdown; readiness must have flipped first.
        assert!(state.shutdown.is_triggered());
    }

    #[tokio::test]
    async fn not_ready_while_draining() {
        let state = AdminState {
            metrics: Metrics::new().expect("metrics"),
            readiness: Readiness::new(),
            shutdown: Shutdown::new(),
        };
        state.readiness.register("plans").mark_ready();
        let app = router(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Served without graceful shutdown, to observe /readyz after the signal.
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert_eq!(get(format!("http://{addr}/readyz")).await.0, 200);
        state.shutdown.trigger();
        let (code, body) = get(format!("http://{addr}/readyz")).await;
        assert_eq!((code, body.as_str()), (503, "shutting down\n"));
    }
}
