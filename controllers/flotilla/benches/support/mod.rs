//! What the benchmarks share: the operator and gateway as child processes (their memory and
//! CPU are their own), free ports, the admin server's metrics, histogram quantiles.

#![allow(dead_code)] // each benchmark uses a different part

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Flotilla process (`flotilla run`, `flotilla gateway`), killed when dropped.
pub struct Process(pub Child);

impl Process {
    /// `flotilla run --controllers CONTROLLERS` with its admin server on `admin_port`, plus
    /// the flags in `FLOTILLA_BENCH_OPERATOR_ARGS`.
    pub fn operator(
        kubeconfig: &std::path::Path,
        admin_port: u16,
        controllers: &str,
    ) -> anyhow::Result<Self> {
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["run", "--controllers", controllers, "--log-level", "warn"])
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(
                std::env::var("FLOTILLA_BENCH_OPERATOR_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self(child))
    }

    /// `flotilla ARGS...` against `kubeconfig`.
    pub fn flotilla(kubeconfig: &std::path::Path, args: &[String]) -> anyhow::Result<Self> {
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self(child))
    }

    /// A memory figure of the operator process from `/proc/PID/status`, in KiB: `VmRSS:`
    /// (resident now) or `VmHWM:` (the most it was ever resident).
    pub fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// User and system CPU time the operator process has used, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.0.id()))
    }

    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// User and system CPU time of this process (the sandbox and the benchmark), in seconds.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds("/proc/self/stat")
}

/// `utime + stime` from a `/proc/PID/stat` file, in seconds (at the usual 100 ticks per second).
pub fn cpu_seconds(stat: &str) -> f64 {
    let Ok(text) = std::fs::read_to_string(stat) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after it are space-separated.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the name: state is field 0, utime field 11, stime field 12.
    (ticks(11) + ticks(12)) / 100.0
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(free_ports::<1>()?[0])
}

/// `N` distinct free loopback ports (bound together, so the kernel cannot hand out one twice).
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

pub async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

pub async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http_get(port, "/readyz").await
            && r.starts_with("HTTP/1.1 200")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the operator did not become ready within 30s")
}

pub async fn scrape(port: u16) -> std::io::Result<String> {
    http_get(port, "/metrics").await
}

/// Sums a counter's samples for one controller label.
pub fn metric_value(metrics: &str, name: &str, controller: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("controller=\"{controller}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A histogram's cumulative buckets for one controller: (upper bound, count), ascending.
pub fn histogram(metrics: &str, name: &str, controller: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&format!("controller=\"{controller}\"")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile of a cumulative histogram, interpolated linearly within its bucket (as
/// Prometheus' `histogram_quantile` does).
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return lower.0;
            }
            let within = if count > lower.1 {
                (rank - lower.1) / (count - lower.1)
            } else {
                0.0
            };
            return lower.0 + (bound - lower.0) * within;
        }
        lower = (bound, count);
    }
    lower.0
}
