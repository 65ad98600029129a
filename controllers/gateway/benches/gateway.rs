//! Benchmark: the device gateway in front of N Devices. Prints figures, never fails on time:
//!
//! ```text
//! cargo bench -p flotilla-gateway --bench gateway
//! FLOTILLA_BENCH_DEVICES=10000,100000 cargo bench -p flotilla-gateway --bench gateway
//! ```
//!
//! - `FLOTILLA_BENCH_BINARY`: the `flotilla` binary to run (default: built first with
//!   `cargo build --release -p flotilla`, which is quick when it is up to date).
//! - `FLOTILLA_BENCH_DEVICES`: comma-separated fleet sizes, each on a fresh sandbox and gateway
//!   (default 10000).
//! - `FLOTILLA_BENCH_WRK_SECONDS` (default 20), `FLOTILLA_BENCH_WRK_CONNECTIONS` (64),
//!   `FLOTILLA_BENCH_WRK_THREADS` (2): the poll load.
//! - `FLOTILLA_BENCH_IDLE_SECONDS` (default 60): the idle polling sleep the gateway hands the
//!   simulated fleet, which also spreads the devices' first polls over that time;
//!   `FLOTILLA_BENCH_SIM_INTERVALS` (default 2): how many such intervals the fleet runs.
//!
//! Each run: the sandbox starts in this process; the fleet's Devices and token Secrets are
//! provisioned through the API (`flotilla_simulator::provision`, timed); the gateway runs as its
//! own process (`target/release/flotilla gateway`, built first), so its memory is its own, and
//! is ready when its caches have listed. Then:
//! 1. **API writes**: the simulated fleet (`flotilla_simulator`) polls as agents do; every
//!    request in the sandbox's log from then on is the gateway's. The first interval holds
//!    each device's first contact and configData (two writes each); the later ones are the
//!    steady state, which writes `lastSeen` at most once per resolution (5 min).
//! 2. **Poll throughput**: `wrk` on loopback, a Lua script rotating over every device with its
//!    TargetToken. The per-device rate limit is raised for the benchmark (the load is far above
//!    what one device may send, and rotating spreads it, but a limit hit would count as a
//!    `429`, not a poll).
//! 3. **Memory**: the gateway's VmRSS once its caches have listed, and VmHWM (peak) at the end.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_runtime::Shutdown;
use flotilla_sandbox::{Sandbox, Verb};
use flotilla_simulator::{FleetSpec, token_for};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const NAMESPACE: &str = "bench";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before the first client: see flotilla_runtime::crypto.
    flotilla_runtime::crypto::use_ring();
    let sizes: Vec<usize> = std::env::var("FLOTILLA_BENCH_DEVICES")
        .unwrap_or_else(|_| "10000".into())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect();
    let binary = build_flotilla()?;
    println!(
        "machine: {} cores, {}; load average before: {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut figures = Vec::new();
    for devices in sizes {
        figures.push(run(&binary, devices).await?);
    }
    println!("\nSummary:");
    println!(
        "  {:>7} {:>10} {:>8} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11} {:>11} {:>9} {:>9}",
        "devices",
        "provision",
        "ready",
        "polls/s",
        "p50",
        "p99",
        "non-2xx",
        "sim polls/s",
        "writes/s 1st",
        "writes/s st",
        "RSS MiB",
        "peak MiB"
    );
    for f in &figures {
        println!(
            "  {:>7} {:>9.1}s {:>7.1}s {:>9.0} {:>7.2}ms {:>7.2}ms {:>8} {:>11.0} {:>12.1} {:>11.2} {:>9.0} {:>9.0}",
            f.devices,
            f.provision.as_secs_f64(),
            f.ready.as_secs_f64(),
            f.polls_per_second,
            f.p50_ms,
            f.p99_ms,
            f.non_2xx,
            f.sim_polls_per_second,
            f.first_writes_per_second,
            f.steady_writes_per_second,
            f.rss_kib as f64 / 1024.0,
            f.peak_kib as f64 / 1024.0,
        );
    }
    Ok(())
}

struct Figures {
    devices: usize,
    provision: Duration,
    ready: Duration,
    polls_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    sim_polls_per_second: f64,
    first_writes_per_second: f64,
    steady_writes_per_second: f64,
    rss_kib: u64,
    peak_kib: u64,
}

/// `cargo build --release -p flotilla` (quick when up to date), then the binary's path; or
/// `FLOTILLA_BENCH_BINARY`, used as it is.
fn build_flotilla() -> anyhow::Result<PathBuf> {
    if let Some(binary) = std::env::var_os("FLOTILLA_BENCH_BINARY") {
        return Ok(PathBuf::from(binary));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "flotilla"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .status()?;
    anyhow::ensure!(status.success(), "building the flotilla binary failed");
    // This benchmark is target/release/deps/gateway-*; the binary is target/release/flotilla.
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|release| release.join("flotilla"))
        .filter(|b| b.exists())
        .ok_or_else(|| anyhow::anyhow!("no flotilla binary next to {}", exe.display()))?;
    Ok(binary)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into())
}

async fn run(binary: &Path, devices: usize) -> anyhow::Result<Figures> {
    let idle = Duration::from_secs(env_or("FLOTILLA_BENCH_IDLE_SECONDS", 60));
    let intervals: u32 = env_or("FLOTILLA_BENCH_SIM_INTERVALS", 2);
    println!("\n== {devices} devices");
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .watch_window((devices * 6).max(200_000))
        .start()
        .await?;
    let client = sandbox.client();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    let port = free_port()?;
    let admin_port = free_port()?;
    let spec = FleetSpec {
        gateway_url: format!("http://127.0.0.1:{port}"),
        namespace: NAMESPACE.into(),
        devices,
        start_spread: idle,
        max_in_flight_requests: 64,
        ..FleetSpec::default()
    };
    let started = Instant::now();
    flotilla_simulator::provision(&client, &spec).await?;
    let provision = started.elapsed();
    println!(
        "  provisioned {devices} Devices and their token Secrets in {provision:.1?} ({:.0} Devices/s, 2 writes each)",
        devices as f64 / provision.as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig)?;
    let started = Instant::now();
    let mut gateway = Gateway::spawn(binary, &kubeconfig, port, admin_port, idle)?;
    wait_ready(admin_port, Duration::from_secs(600)).await?;
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_kib = gateway.status_kib("VmRSS:");
    println!(
        "  gateway ready (caches listed) after {ready:.1?}; RSS {} MiB",
        rss_kib / 1024
    );

    // 1. The simulated fleet, polling at the idle sleep.
    sandbox.requests().reset();
    let stop = Shutdown::new();
    let simulation = flotilla_simulator::start(spec.clone(), stop.clone())?;
    let counters = simulation.counters();
    let began = Instant::now();
    tokio::time::sleep(idle).await;
    let first_writes = writes(&sandbox);
    let first_polls = counters.snapshot().polls;
    let first = began.elapsed();
    tokio::time::sleep(idle * intervals.saturating_sub(1).max(1)).await;
    let steady = began.elapsed() - first;
    let counts = counters.snapshot();
    let steady_writes = writes(&sandbox) - first_writes;
    stop.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(30), simulation.wait()).await;
    let first_writes_per_second = first_writes as f64 / first.as_secs_f64();
    let steady_writes_per_second = steady_writes as f64 / steady.as_secs_f64();
    let sim_polls_per_second = counts.polls as f64 / began.elapsed().as_secs_f64();
    println!(
        "  simulated fleet, idle sleep {idle:?}: {} polls ({first_polls} in the first interval), {} configData, errors {:?}, transport errors {}",
        counts.polls, counts.config_data, counts.errors_by_status, counts.transport_errors
    );
    println!(
        "  gateway API writes: first interval {first_writes} ({first_writes_per_second:.1}/s, {:.2} per device); steady {steady_writes} in {steady:.0?} ({steady_writes_per_second:.2}/s); lastSeen refreshes add at most {:.1}/s (N / 5 min)",
        first_writes as f64 / devices as f64,
        devices as f64 / 300.0
    );
    for ((verb, resource), n) in sandbox.requests().counts() {
        println!("    {:<8} {:<22} {n}", verb.as_str(), resource);
    }

    // 2. wrk.
    let seconds: u64 = env_or("FLOTILLA_BENCH_WRK_SECONDS", 20);
    let connections: u32 = env_or("FLOTILLA_BENCH_WRK_CONNECTIONS", 64);
    let threads: u32 = env_or("FLOTILLA_BENCH_WRK_THREADS", 2);
    let script = write_wrk_script(dir.path(), &spec, threads)?;
    let before = writes(&sandbox);
    let output = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(&script)
        .arg(&spec.gateway_url)
        .output()
        .map_err(|e| anyhow::anyhow!("running wrk (apt-get install -y wrk): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("BENCH "))
        .ok_or_else(|| anyhow::anyhow!("wrk printed no summary: {text}"))?;
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let polls_per_second = field("requests") / (field("duration_us") / 1e6);
    let (p50_ms, p99_ms) = (field("p50_us") / 1e3, field("p99_us") / 1e3);
    let non_2xx = field("status_errors") as u64;
    println!(
        "  wrk {threads} threads, {connections} connections, {seconds} s: {polls_per_second:.0} polls/s, latency p50 {p50_ms:.2} ms, p99 {p99_ms:.2} ms, non-2xx {non_2xx}, socket errors {}; API writes meanwhile {}",
        field("socket_errors"),
        writes(&sandbox) - before
    );

    let peak_kib = gateway.status_kib("VmHWM:");
    println!(
        "  gateway memory: RSS {} MiB after listing, peak (VmHWM) {} MiB ({:.2} KiB per device)",
        rss_kib / 1024,
        peak_kib / 1024,
        peak_kib as f64 / devices as f64
    );
    gateway.stop();
    Ok(Figures {
        devices,
        provision,
        ready,
        polls_per_second,
        p50_ms,
        p99_ms,
        non_2xx,
        sim_polls_per_second,
        first_writes_per_second,
        steady_writes_per_second,
        rss_kib,
        peak_kib,
    })
}

/// API writes in the sandbox's log (all of them the gateway's once the fleet is provisioned).
fn writes(sandbox: &Sandbox) -> usize {
    sandbox
        .requests()
        .snapshot()
        .iter()
        .filter(|r| {
            matches!(
                r.verb,
                Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
            )
        })
        .count()
}

/// A `wrk` script polling every device in turn with its TargetToken; each thread starts at
/// its own offset. Prints one `BENCH key=value ...` line at the end.
fn write_wrk_script(dir: &Path, spec: &FleetSpec, threads: u32) -> anyhow::Result<PathBuf> {
    let devices_file = dir.join("devices.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&devices_file)?);
    for index in 0..spec.devices {
        let name = spec.device_name(index);
        writeln!(file, "{name} {}", token_for(spec.seed, &name))?;
    }
    file.flush()?;
    let mut lua = String::new();
    write!(
        lua,
        r#"
local threads = {{}}
local counter = 0
function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  paths = {{}}
  auths = {{}}
  for line in io.lines("{devices}") do
    local name, token = line:match("^(%S+) (%S+)$")
    table.insert(paths, "/{namespace}/controller/v1/" .. name)
    table.insert(auths, "TargetToken " .. token)
  end
  n = #paths
  i = math.floor(index * n / {threads_hint}) % n
end
function request()
  i = i % n + 1
  return wrk.format("GET", paths[i], {{["Authorization"] = auths[i]}})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"#,
        devices = devices_file.display(),
        namespace = spec.namespace,
        threads_hint = threads,
    )?;
    let script = dir.join("poll.lua");
    std::fs::write(&script, lua)?;
    Ok(script)
}

struct Gateway(Child);

impl Gateway {
    fn spawn(
        binary: &Path,
        kubeconfig: &Path,
        port: u16,
        admin_port: u16,
        idle: Duration,
    ) -> anyhow::Result<Self> {
        let child = Command::new(binary)
            .args(["gateway", "--log-level", "warn", "--namespaces", NAMESPACE])
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin_port}"))
            .arg(format!("--poll-idle={}s", idle.as_secs()))
            // Raised so the benchmark's load measures polls, not the limiter (see the top).
            .args(["--rate-per-minute", "1000000", "--rate-burst", "100000"])
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self(child))
    }

    /// `VmRSS:` or `VmHWM:` of the gateway process, in KiB.
    fn status_kib(&self, field: &str) -> u64 {
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

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

async fn wait_ready(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = http_get(port, "/readyz").await
            && r.starts_with("HTTP/1.1 200")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the gateway did not become ready within {timeout:?}")
}
