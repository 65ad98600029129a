//! Benchmark: provision N Subscriptions (default 1,000; `FLOTILLA_BENCH_SUBSCRIPTIONS`) against
//! the sandbox and print what it cost.
//!
//! The operator runs as its own process (`flotilla run`), so its peak RSS is its own; the
//! Plan and Subscriptions are written straight into the sandbox's store, so every request in
//! the sandbox's log is the operator's. Prints figures, never fails on time:
//!
//! ```text
//! cargo bench -p flotilla --bench subscriptions
//! ```

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_sandbox::Sandbox;
use flotilla_sandbox::registry::ResourceKey;
use flotilla_sandbox::store::WriteOptions;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("FLOTILLA_BENCH_SUBSCRIPTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .watch_window(200_000)
        .start()
        .await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig)?;
    let admin_port = free_port()?;
    let mut operator = Operator::spawn(&kubeconfig, admin_port)?;
    wait_ready(admin_port).await?;

    let store = sandbox.store();
    let opts = WriteOptions {
        field_manager: Some("bench".into()),
        ..Default::default()
    };
    let plans = ResourceKey::new("flotilla.dev", "plans");
    let subscriptions = ResourceKey::new("flotilla.dev", "subscriptions");
    store
        .create(
            &plans,
            "",
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
                "metadata": {"name": "team"},
                "spec": {
                    "displayName": "Team",
                    "quota": {"hard": {"requests.cpu": "8", "limits.memory": "32Gi", "pods": "50",
                                       "count/configmaps": "100"}},
                    "limitRange": {"default": {"cpu": "500m", "memory": "512Mi"},
                                   "defaultRequest": {"cpu": "100m", "memory": "128Mi"}},
                    "features": {"sso": true},
                    "trialDays": 0,
                    "gracePeriodDays": 7,
                    "networkIsolation": true
                }
            }),
            &opts,
        )
        .map_err(|e| anyhow::anyhow!("creating the plan: {}", e.body))?;
    sandbox.requests().reset();

    let started = Instant::now();
    for i in 0..count {
        store
            .create(
                &subscriptions,
                "",
                json!({
                    "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
                    "metadata": {"name": format!("tenant-{i:05}")},
                    "spec": {
                        "plan": "team",
                        "owners": [{"kind": "User", "name": format!("owner-{i}@example.com")}],
                        "state": "Active"
                    }
                }),
                &opts,
            )
            .map_err(|e| anyhow::anyhow!("creating subscription {i}: {}", e.body))?;
    }
    let created = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(600);
    let mut active;
    loop {
        active = count_active(&sandbox, &subscriptions);
        if active == count || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    // Let trailing writes (status of the last objects, Events) land before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let metrics = scrape(admin_port).await.unwrap_or_default();
    let reconciles = metric_value(&metrics, "flotilla_reconciliations_total", "subscription");
    let rss_kib = operator.peak_rss_kib();
    operator.stop();

    println!("Subscriptions provisioned: {active}/{count} Active");
    println!("  created in             {:>10.2?}", created);
    println!(
        "  all Active after       {:>10.2?}  ({:.0} subscriptions/s)",
        elapsed,
        active as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  reconciles/subscription {:>9.2}",
        reconciles / count as f64
    );
    println!("  operator peak RSS      {:>10} MiB", rss_kib / 1024);
    println!("API requests per Subscription (operator only), by verb and resource:");
    let mut by_verb: BTreeMap<String, usize> = BTreeMap::new();
    for ((verb, resource), n) in sandbox.requests().counts() {
        *by_verb.entry(verb.to_string()).or_default() += n;
        println!(
            "  {:<8} {:<28} {:>8.2}",
            verb.as_str(),
            resource,
            n as f64 / count as f64
        );
    }
    let writes: usize = by_verb
        .iter()
        .filter(|(v, _)| matches!(v.as_str(), "create" | "update" | "patch" | "delete"))
        .map(|(_, n)| n)
        .sum();
    println!(
        "  total writes           {:>10.2}  (ideal: finalizer + namespace create + 5 child applies + status = 8, plus Events)",
        writes as f64 / count as f64
    );
    Ok(())
}

fn count_active(sandbox: &Sandbox, key: &ResourceKey) -> usize {
    let everything = flotilla_sandbox::selector::LabelSelector::parse("").expect("empty selector");
    let fields = flotilla_sandbox::selector::FieldSelector::parse("").expect("empty selector");
    sandbox
        .store()
        .list(key, None, &everything, &fields, None, None)
        .map(|page| {
            page.items
                .iter()
                .filter(|s| s.pointer("/status/phase").and_then(|p| p.as_str()) == Some("Active"))
                .count()
        })
        .unwrap_or(0)
}

struct Operator(Child);

impl Operator {
    fn spawn(kubeconfig: &std::path::Path, admin_port: u16) -> anyhow::Result<Self> {
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args([
                "run",
                "--controllers",
                "plan,subscription",
                "--log-level",
                "warn",
            ])
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{admin_port}"))
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self(child))
    }

    /// VmHWM: the most resident memory the operator process ever had.
    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
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

impl Drop for Operator {
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

async fn wait_ready(port: u16) -> anyhow::Result<()> {
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

async fn scrape(port: u16) -> std::io::Result<String> {
    http_get(port, "/metrics").await
}

/// Sums a counter's samples for one controller label.
fn metric_value(metrics: &str, name: &str, controller: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("controller=\"{controller}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
