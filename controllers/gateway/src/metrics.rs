//! The gateway's metrics, registered in the process registry (`docs/gateway-api.md`).

use prometheus::{IntCounterVec, Opts, Registry};

/// Counters of requests and Device status writes.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    requests: IntCounterVec,
    writes: IntCounterVec,
}

impl GatewayMetrics {
    /// Registers the gateway's families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "flotilla_gateway_requests_total",
                "DDI requests served, by route and HTTP status code.",
            ),
            &["route", "code"],
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "flotilla_gateway_status_writes_total",
                "Device status writes sent to the API server, by what caused them (poll, feedback, cancel, config) and result (ok, conflict, error).",
            ),
            &["cause", "result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        Ok(Self { requests, writes })
    }

    /// Counts a served request.
    pub fn request(&self, route: &str, code: u16) {
        self.requests
            .with_label_values(&[route, &code.to_string()])
            .inc();
    }

    /// Counts a status write.
    pub fn write(&self, cause: &str, result: &str) {
        self.writes.with_label_values(&[cause, result]).inc();
    }
}
