//! Benchmark: one Campaign delivered through a Webhook Channel to a local receiver, and what
//! it cost. Prints figures, never fails on time:
//!
//! ```text
//! cargo bench -p flotilla --bench campaigns
//! FLOTILLA_BENCH_RUNS=throttled FLOTILLA_BENCH_RECIPIENTS=5000 cargo bench -p flotilla --bench campaigns
//! ```
//!
//! - `FLOTILLA_BENCH_RUNS`: comma-separated runs out of `unthrottled`, `throttled`, `large`
//!   (default all three), each on a fresh sandbox and operator process.
//! - `FLOTILLA_BENCH_RECIPIENTS`: recipients of the `unthrottled` and `throttled` runs
//!   (default 20000).
//! - `FLOTILLA_BENCH_LARGE_RECIPIENTS`: recipients of the `large` run (default 100000),
//!   unthrottled.
//! - `FLOTILLA_BENCH_MAX_IN_FLIGHT`: `spec.throttle.maxInFlight` of every run (default 256).
//! - `FLOTILLA_BENCH_RATE`: `spec.throttle.messagesPerMinute` of the `throttled` run (default
//!   6000, i.e. 100/s).
//! - `FLOTILLA_BENCH_CAPACITY_CLIENTS` / `FLOTILLA_BENCH_CAPACITY_SECS`: the receiver's own
//!   capacity is measured in each run, just before its Campaign starts, with this many
//!   concurrent requests for this long (default 256 for 5 s).
//! - `FLOTILLA_BENCH_DEADLINE_SECS`: when a run gives up waiting for `Completed` (default 1800).
//!
//! The sandbox and the webhook receiver (axum, counting requests per `Idempotency-Key` and
//! their arrival times) run in this process; the operator (`flotilla run --controllers
//! channel,campaign`) runs as its own process, so its memory and CPU are its own. Active
//! Subscriptions are written straight into the sandbox's store (no subscription controller
//! runs), as are the Channel (no rate limit) and the Campaign, so every API write the sandbox
//! records during a run is the operator's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use flotilla_crds::{Campaign, CampaignPhase, Channel, ChannelPhase};
use flotilla_sandbox::Sandbox;
use flotilla_sandbox::registry::ResourceKey;
use flotilla_sandbox::store::{Mutation, WriteOptions};
use kube::Api;
use serde_json::json;

mod support;
use support::{
    Process, free_port, histogram, metric_value, own_cpu_seconds, quantile, scrape, wait_ready,
};

const NAMESPACE: &str = "news";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// One run: its name, recipients and `messagesPerMinute` (none: unthrottled).
#[derive(Clone, Copy, Debug)]
struct RunSpec {
    name: &'static str,
    recipients: usize,
    per_minute: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let recipients = env_number("FLOTILLA_BENCH_RECIPIENTS", 20_000) as usize;
    let large = env_number("FLOTILLA_BENCH_LARGE_RECIPIENTS", 100_000) as usize;
    let rate = env_number("FLOTILLA_BENCH_RATE", 6000);
    let max_in_flight = env_number("FLOTILLA_BENCH_MAX_IN_FLIGHT", 256);
    let selected = std::env::var("FLOTILLA_BENCH_RUNS")
        .unwrap_or_else(|_| "unthrottled,throttled,large".into());
    let mut runs = Vec::new();
    for name in selected.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        runs.push(match name {
            "unthrottled" => RunSpec {
                name: "unthrottled",
                recipients,
                per_minute: None,
            },
            "throttled" => RunSpec {
                name: "throttled",
                recipients,
                per_minute: Some(rate),
            },
            "large" => RunSpec {
                name: "large",
                recipients: large,
                per_minute: None,
            },
            other => anyhow::bail!(
                "FLOTILLA_BENCH_RUNS: unknown run {other:?} (unthrottled, throttled, large)"
            ),
        });
    }

    let clients = env_number("FLOTILLA_BENCH_CAPACITY_CLIENTS", 256) as usize;
    let capacity_for = Duration::from_secs(env_number("FLOTILLA_BENCH_CAPACITY_SECS", 5));
    let capacity = Capacity {
        clients,
        how_long: capacity_for,
    };
    println!(
        "receiver capacity is measured in each run just before its Campaign starts ({clients} \
         concurrent reqwest requests for {capacity_for:?}, client in this process; {} cores)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    let mut figures = Vec::new();
    for spec in runs {
        figures.push(run(spec, max_in_flight, capacity).await?);
    }

    println!(
        "\nSummary (maxInFlight {max_in_flight}; target msgs/s ≥ 0.8× the receiver's capacity unthrottled, \
         within 1% of the rate throttled, 0 duplicates):"
    );
    println!(
        "  {:<12} {:>7} {:>9} {:>9} {:>9} {:>7} {:>6} {:>10} {:>9} {:>9} {:>11} {:>9} {:>7}",
        "run",
        "recip.",
        "phase",
        "msgs/s",
        "cap/s",
        "×cap",
        "dups",
        "writes/msg",
        "cm/msg",
        "status w",
        "first msg",
        "Completed",
        "op MiB"
    );
    for f in &figures {
        println!(
            "  {:<12} {:>7} {:>9} {:>9.1} {:>9.0} {:>7.2} {:>6} {:>10.4} {:>9.4} {:>9} {:>10.2}s {:>8.1}s {:>7}",
            f.name,
            f.recipients,
            f.phase,
            f.rate,
            f.capacity,
            f.rate / f.capacity,
            f.duplicates,
            f.writes_per_message,
            f.configmap_writes_per_message,
            f.status_writes,
            f.first_message.map_or(f64::NAN, |d| d.as_secs_f64()),
            f.completed.map_or(f64::NAN, |d| d.as_secs_f64()),
            f.operator_peak_mib
        );
    }
    Ok(())
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Requests per `Idempotency-Key`.
    keys: HashMap<String, u32>,
    /// Requests without one.
    unkeyed: u64,
    /// When each request arrived, in order.
    arrivals: Vec<Instant>,
}

/// A webhook receiver on a free loopback port, answering 200 to everything; it stops when
/// dropped.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, seen, task })
    }

    fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn received(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .arrivals
            .len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    _body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let now = Instant::now();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    seen.arrivals.push(now);
    match key {
        Some(key) => *seen.keys.entry(key).or_default() += 1,
        None => seen.unkeyed += 1,
    }
    (StatusCode::OK, "ok")
}

/// Requests per second the receiver answers to `clients` concurrent requests (one pooled
/// reqwest client, a body the size of a campaign message), for `how_long`.
async fn receiver_capacity(clients: usize, how_long: Duration) -> anyhow::Result<f64> {
    let receiver = Receiver::start().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let body = serde_json::to_vec(&json!({
        "id": "0123456789abcdef0123456789abcdef", "campaign": "bench", "variant": "default",
        "recipient": {"name": "Customer 00000", "email": "customer-00000@example.com"},
        "subject": "News", "body": "Hello Customer 00000", "unsubscribeUrl": null,
    }))?;
    let started = Instant::now();
    let until = started + how_long;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, url, body) = (client.clone(), receiver.url.clone(), body.clone());
        tasks.spawn(async move {
            let mut ok = 0u64;
            // Bounded in time and in count.
            for i in 0..10_000_000u64 {
                if Instant::now() >= until {
                    break;
                }
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("cap-{c}-{i}"))
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(response) = sent
                    && response.status().is_success()
                    && response.bytes().await.is_ok()
                {
                    ok += 1;
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += done?;
    }
    let elapsed = started.elapsed();
    let seen = receiver.take();
    anyhow::ensure!(
        seen.arrivals.len() as u64 >= ok,
        "the receiver counted fewer requests than were answered"
    );
    Ok(ok as f64 / elapsed.as_secs_f64())
}

/// How the receiver's capacity is measured.
#[derive(Clone, Copy)]
struct Capacity {
    clients: usize,
    how_long: Duration,
}

struct Figures {
    name: &'static str,
    /// The receiver's capacity measured just before the Campaign, requests/s.
    capacity: f64,
    recipients: usize,
    phase: String,
    rate: f64,
    duplicates: u64,
    writes_per_message: f64,
    configmap_writes_per_message: f64,
    status_writes: usize,
    first_message: Option<Duration>,
    completed: Option<Duration>,
    operator_peak_mib: u64,
}

async fn run(spec: RunSpec, max_in_flight: u64, capacity: Capacity) -> anyhow::Result<Figures> {
    let n = spec.recipients;
    println!(
        "\n== {}: {n} recipients, {} ==",
        spec.name,
        spec.per_minute
            .map_or("unthrottled".to_string(), |r| format!(
                "throttled at {r}/minute"
            ))
    );
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .watch_window((n * 4).max(200_000))
        .start()
        .await?;
    let client = sandbox.client();
    let store = sandbox.store();
    let opts = WriteOptions {
        field_manager: Some("bench".into()),
        ..Default::default()
    };
    store
        .create(
            &ResourceKey::new("", "namespaces"),
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            &opts,
        )
        .map_err(|e| anyhow::anyhow!("namespace: {}", e.body))?;

    // Active Subscriptions, as their controller would have left them.
    let provisioning = Instant::now();
    let subscriptions = ResourceKey::new("flotilla.dev", "subscriptions");
    let active = json!({"status": {"phase": "Active"}});
    for i in 0..n {
        let name = format!("customer-{i:06}");
        store
            .create(
                &subscriptions,
                "",
                json!({
                    "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
                    "metadata": {"name": name, "labels": {"audience": "bench"}},
                    "spec": {
                        "plan": "team",
                        "owners": [{"kind": "User", "name": format!("{name}@example.com")}],
                        "contact": {"name": format!("Customer {i}"), "email": format!("{name}@example.com")},
                    },
                }),
                &opts,
            )
            .map_err(|e| anyhow::anyhow!("subscription {i}: {}", e.body))?;
        store
            .update(
                &subscriptions,
                "",
                &name,
                Some("status"),
                Mutation::Merge(&active),
                &opts,
            )
            .map_err(|e| anyhow::anyhow!("subscription {i} status: {}", e.body))?;
    }
    println!(
        "{n} Active Subscriptions written in {:.1?}",
        provisioning.elapsed()
    );

    let receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig)?;
    let admin_port = free_port()?;
    let mut operator = Process::operator(&kubeconfig, admin_port, "channel,campaign")?;
    wait_ready(admin_port).await?;

    store
        .create(
            &ResourceKey::new("flotilla.dev", "channels"),
            NAMESPACE,
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
                "metadata": {"name": "hook", "namespace": NAMESPACE},
                "spec": {"type": "Webhook", "webhook": {"url": receiver.url}, "timeout": "10s"},
            }),
            &opts,
        )
        .map_err(|e| anyhow::anyhow!("channel: {}", e.body))?;
    let channels: Api<Channel> = Api::namespaced(client.clone(), NAMESPACE);
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let phase = channels
            .get("hook")
            .await
            .ok()
            .and_then(|c| c.status.and_then(|s| s.phase));
        if phase == Some(ChannelPhase::Ready) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < ready_by,
            "the Channel is not Ready after 60s: {phase:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the informers settle (the operator lists every Subscription at its start).
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Measured now, on the same machine state (the operator idle), so that drift between
    // runs (a virtualised machine's neighbours) does not skew the ratio.
    let capacity = receiver_capacity(capacity.clients, capacity.how_long).await?;
    println!("receiver capacity now: {capacity:.0} requests/s");
    receiver.take();
    sandbox.requests().reset();

    let mut throttle = json!({"maxInFlight": max_in_flight});
    if let Some(per_minute) = spec.per_minute {
        throttle["messagesPerMinute"] = json!(per_minute);
    }
    let (operator_cpu_before, own_cpu_before) = (operator.cpu_seconds(), own_cpu_seconds());
    let rss_before_mib = operator.status_kib("VmRSS:") / 1024;
    let created = Instant::now();
    store
        .create(
            &ResourceKey::new("flotilla.dev", "campaigns"),
            NAMESPACE,
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Campaign",
                "metadata": {"name": "bench", "namespace": NAMESPACE},
                "spec": {
                    "audience": {"selector": {"matchLabels": {"audience": "bench"}}},
                    "channels": {"names": ["hook"]},
                    "message": {"subject": "News", "body": "Hello {{ subscription.contact.name }}"},
                    "schedule": {"startAt": "2020-01-01T00:00:00Z"},
                    "retry": {"maxAttempts": 3, "initialBackoff": "1s", "maxBackoff": "2s"},
                    "throttle": throttle,
                },
            }),
            &opts,
        )
        .map_err(|e| anyhow::anyhow!("campaign: {}", e.body))?;

    let campaigns: Api<Campaign> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = created + Duration::from_secs(env_number("FLOTILLA_BENCH_DEADLINE_SECS", 1800));
    let verbose = std::env::var_os("FLOTILLA_BENCH_VERBOSE").is_some();
    let mut last_line = Instant::now();
    let mut peak_rss_kib = 0;
    let (phase, completed, status) = loop {
        let campaign = campaigns.get("bench").await?;
        let status = campaign.status.unwrap_or_default();
        peak_rss_kib = peak_rss_kib.max(operator.status_kib("VmHWM:"));
        if verbose && last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            println!(
                "  {:>6.1}s {:?} sent {:?}, received {}",
                created.elapsed().as_secs_f64(),
                status.phase,
                status
                    .counts
                    .as_ref()
                    .map(|c| (c.sent, c.pending, c.failed)),
                receiver.received()
            );
        }
        match status.phase {
            Some(CampaignPhase::Completed) => {
                break (status.phase, Some(created.elapsed()), status);
            }
            Some(CampaignPhase::Paused | CampaignPhase::Cancelled | CampaignPhase::Failed) => {
                break (status.phase, None, status);
            }
            _ if Instant::now() > deadline => break (status.phase, None, status),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // Let trailing writes (the last status, Events) land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = sandbox.requests().snapshot();
    let seen = receiver.take();
    let metrics = scrape(admin_port).await.unwrap_or_default();
    let busy = histogram(&metrics, "flotilla_reconcile_busy_seconds", "campaign");
    let reconciles = metric_value(&metrics, "flotilla_reconciliations_total", "campaign");
    let peak_mib = peak_rss_kib.max(operator.status_kib("VmHWM:")) / 1024;
    let operator_cpu = operator.cpu_seconds() - operator_cpu_before;
    let own_cpu = own_cpu_seconds() - own_cpu_before;
    operator.stop();
    drop(receiver);

    // Delivery: rate, duplicates, first message.
    let received = seen.arrivals.len();
    let duplicates: u64 = seen.keys.values().map(|&c| u64::from(c - 1)).sum();
    let first = seen.arrivals.first().copied();
    let last = seen.arrivals.last().copied();
    let span = match (first, last) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    let rate = if span.is_zero() {
        0.0
    } else {
        received as f64 / span.as_secs_f64()
    };
    let counts = status.counts.clone().unwrap_or_default();
    println!(
        "{}: {phase:?}{} (deadline or not), status counts sent {} failed {} pending {} of {} targeted",
        spec.name,
        completed.map_or(String::new(), |d| format!(" after {d:.2?}")),
        counts.sent,
        counts.failed,
        counts.pending,
        counts.targeted
    );
    println!(
        "  receiver: {received} requests, {} distinct Idempotency-Keys, {duplicates} duplicates, {} without a key",
        seen.keys.len(),
        seen.unkeyed
    );
    println!(
        "  first message {:.2?} after the Campaign was created; last {:.2?} after the first",
        first.map(|f| f - created),
        span
    );
    println!(
        "  delivery: {rate:.1} messages/s from first to last message = {:.2}× the receiver's capacity ({capacity:.0}/s)",
        rate / capacity
    );

    // Per whole second of arrival, counted from the first message.
    let mut per_second: Vec<u64> = Vec::new();
    if let Some(first) = first {
        for at in &seen.arrivals {
            let second = (*at - first).as_secs() as usize;
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += 1;
        }
    }
    // The last second is partial.
    let whole = &per_second[..per_second.len().saturating_sub(1)];
    let max = whole.iter().copied().max().unwrap_or(0);
    let min = whole.iter().copied().min().unwrap_or(0);
    if let Some(per_minute) = spec.per_minute {
        let target = per_minute as f64 / 60.0;
        let overall = if span.is_zero() {
            0.0
        } else {
            received.saturating_sub(1) as f64 / span.as_secs_f64()
        };
        println!(
            "  throttle {per_minute}/minute = {target:.1}/s: over {} whole seconds max {max} ({:+.1}%), min {min} ({:+.1}%); \
             overall {overall:.2}/s ({:+.2}%; (n−1)/span)",
            whole.len(),
            (max as f64 / target - 1.0) * 100.0,
            (min as f64 / target - 1.0) * 100.0,
            (overall / target - 1.0) * 100.0
        );
        let above = whole.iter().filter(|&&c| c as f64 > target).count();
        println!(
            "  seconds above the rate: {above}; first seconds: {:?}",
            &per_second[..per_second.len().min(10)]
        );
    } else {
        println!(
            "  per whole second: max {max}, min {min} over {} seconds; first seconds: {:?}",
            whole.len(),
            &per_second[..per_second.len().min(10)]
        );
    }

    // API writes during the run: every non-read the sandbox served (the benchmark writes
    // straight into the store, so these are the operator's).
    let is_write = |r: &flotilla_sandbox::RequestRecord| {
        matches!(
            r.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    };
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut agents: BTreeMap<String, usize> = BTreeMap::new();
    let mut reads = 0;
    for r in &records {
        if is_write(r) {
            *by.entry((r.verb.as_str().to_owned(), r.full_resource()))
                .or_default() += 1;
            *agents.entry(r.user_agent.clone()).or_default() += 1;
        } else {
            reads += 1;
        }
    }
    let writes: usize = by.values().sum();
    let of = |resource: &str| {
        by.iter()
            .filter(|((_, r), _)| r == resource)
            .map(|(_, n)| *n)
            .sum::<usize>()
    };
    let configmap_writes = of("configmaps");
    let status_writes = of("campaigns/status");
    let messages = received.max(1) as f64;
    println!(
        "  API writes: {writes} = {:.4}/message; ConfigMaps (ledger) {configmap_writes} = {:.4}/message; \
         Campaign status {status_writes}; reads (incl. this benchmark's polling) {reads}",
        writes as f64 / messages,
        configmap_writes as f64 / messages
    );
    for ((verb, resource), count) in &by {
        println!("    {verb:<8} {resource:<24} {count:>8}");
    }
    println!("    by user agent: {agents:?}");
    println!(
        "  operator: RSS {rss_before_mib} MiB before the Campaign (its caches), peak {peak_mib} MiB; CPU {operator_cpu:.1}s ({:.0} µs/message); this process (sandbox, receiver) CPU {own_cpu:.1}s \
         ({:.0} µs/message); campaign reconciles {reconciles:.0}, busy p50/p99 {:.2}/{:.2} ms",
        operator_cpu / messages * 1e6,
        own_cpu / messages * 1e6,
        quantile(&busy, 0.5) * 1e3,
        quantile(&busy, 0.99) * 1e3
    );
    drop(sandbox);
    Ok(Figures {
        name: spec.name,
        capacity,
        recipients: n,
        phase: phase.map_or("-".into(), |p| format!("{p:?}")),
        rate,
        duplicates,
        writes_per_message: writes as f64 / messages,
        configmap_writes_per_message: configmap_writes as f64 / messages,
        status_writes,
        first_message: first.map(|f| f - created),
        completed,
        operator_peak_mib: peak_mib,
    })
}
