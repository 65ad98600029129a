//! Benchmark: provision N Subscriptions against the sandbox and print what it cost.
//!
//! The operator runs as its own process (`flotilla run`), so its memory is its own; the Plan
//! and Subscriptions are written straight into the sandbox's store, so every request in the
//! sandbox's log is the operator's. Prints figures, never fails on time:
//!
//! ```text
//! cargo bench -p flotilla --bench subscriptions
//! FLOTILLA_BENCH_SUBSCRIPTIONS=1000,10000,50000 cargo bench -p flotilla --bench subscriptions
//! FLOTILLA_BENCH_LATENCY_MS=5 cargo bench -p flotilla --bench subscriptions
//! ```
//!
//! - `FLOTILLA_BENCH_SUBSCRIPTIONS`: comma-separated sizes, each run on a fresh sandbox and
//!   operator (default 1000).
//! - `FLOTILLA_BENCH_LATENCY_MS`: latency the sandbox adds to every request (default 0).
//! - `FLOTILLA_BENCH_OPERATOR_ARGS`: more flags for `flotilla run`, e.g. `--concurrency 32`.
//!
//! Before the operator starts, the sandbox's request rate is measured with 16 clients sending
//! server-side applies at that latency; the ideal time is the ideal number of writes (8 per
//! Subscription) at that rate.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flotilla_sandbox::Sandbox;
use flotilla_sandbox::registry::ResourceKey;
use flotilla_sandbox::store::{ChangeType, WatchStart, WriteOptions};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod support;
use support::{
    Process, free_port, histogram, metric_value, own_cpu_seconds, quantile, scrape, wait_ready,
};

/// Writes per Subscription in the ideal: finalizer, namespace create, five child applies,
/// status.
const IDEAL_WRITES: f64 = 8.0;
/// Clients of the request-rate calibration (as many as the operator's default concurrency).
const CALIBRATION_CLIENTS: usize = 16;
const CALIBRATION_TIME: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("FLOTILLA_BENCH_SUBSCRIPTIONS")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect();
    let latency = Duration::from_millis(
        std::env::var("FLOTILLA_BENCH_LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let mut figures = Vec::new();
    for count in sizes {
        figures.push(run(count, latency).await?);
    }
    if figures.len() > 1 {
        println!("\nSummary (latency {latency:?}):");
        println!(
            "  {:>7} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "subs",
            "Active",
            "subs/s",
            "busy p50",
            "busy p99",
            "writes/sub",
            "reconc/sub",
            "KiB/sub",
            "vs ideal"
        );
        for f in &figures {
            println!(
                "  {:>7} {:>8.1}s {:>8.0} {:>8.2}ms {:>8.2}ms {:>10.2} {:>10.2} {:>10.1} {:>9.2}",
                f.count,
                f.elapsed.as_secs_f64(),
                f.rate,
                f.busy_p50 * 1e3,
                f.busy_p99 * 1e3,
                f.writes,
                f.reconciles,
                f.kib_per_subscription,
                f.ratio
            );
        }
    }
    Ok(())
}

/// What one run measured.
struct Figures {
    count: usize,
    elapsed: Duration,
    rate: f64,
    busy_p50: f64,
    busy_p99: f64,
    writes: f64,
    reconciles: f64,
    kib_per_subscription: f64,
    ratio: f64,
}

async fn run(count: usize, latency: Duration) -> anyhow::Result<Figures> {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        // The changes a watch can resume from (each Subscription makes about 15; the history
        // keeps every version it holds alive, so not all of them).
        .watch_window((count * 5).max(200_000))
        .start()
        .await?;
    sandbox.faults().latency(latency);
    let calibrated = calibrate(&sandbox).await?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig)?;
    let admin_port = free_port()?;
    let mut operator = Process::operator(&kubeconfig, admin_port, "plan,subscription")?;
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
    // Let the Plan become Ready, then take the operator's resident memory as its base.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_kib = operator.status_kib("VmRSS:");
    let (operator_cpu_before, sandbox_cpu_before) = (operator.cpu_seconds(), own_cpu_seconds());
    let active = count_active(&sandbox, &subscriptions)?;
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

    let deadline =
        Instant::now() + Duration::from_secs(600).max(Duration::from_millis(count as u64 * 20));
    while active.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let done = active.load(Ordering::Relaxed);
    // Let trailing writes (status of the last objects, Events) land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let metrics = scrape(admin_port).await.unwrap_or_default();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("flotilla_debug_wakes"))
    {
        println!("  DEBUG {line}");
    }
    let reconciles = metric_value(&metrics, "flotilla_reconciliations_total", "subscription");
    let plan_reconciles = metric_value(&metrics, "flotilla_reconciliations_total", "plan");
    let busy = histogram(&metrics, "flotilla_reconcile_busy_seconds", "subscription");
    let wall = histogram(
        &metrics,
        "flotilla_reconcile_duration_seconds",
        "subscription",
    );
    let operator_cpu = operator.cpu_seconds() - operator_cpu_before;
    let sandbox_cpu = own_cpu_seconds() - sandbox_cpu_before;
    let peak_kib = operator.status_kib("VmHWM:");
    let final_kib = operator.status_kib("VmRSS:");
    operator.stop();

    let n = count as f64;
    let rate = done as f64 / elapsed.as_secs_f64();
    println!(
        "\n{done}/{count} Subscriptions Active (latency {latency:?}, {} cores)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("  created in              {:>10.2?}", created);
    println!(
        "  all Active after        {:>10.2?}  ({rate:.0} subscriptions/s)",
        elapsed
    );
    println!(
        "  reconciles/subscription {:>10.2}  (plan controller: {:.0} in all)",
        reconciles / n,
        plan_reconciles
    );
    println!(
        "  reconcile busy p50/p99  {:>7.3} ms / {:.3} ms  (the operator's own work, API waits excluded)",
        quantile(&busy, 0.5) * 1e3,
        quantile(&busy, 0.99) * 1e3
    );
    println!(
        "  reconcile wall p50/p99  {:>7.1} ms / {:.1} ms  (API waits included)",
        quantile(&wall, 0.5) * 1e3,
        quantile(&wall, 0.99) * 1e3
    );
    println!(
        "  CPU                     operator {operator_cpu:.1} s ({:.2} ms/Subscription), sandbox and benchmark {sandbox_cpu:.1} s ({:.2} ms/Subscription)",
        operator_cpu * 1e3 / n,
        sandbox_cpu * 1e3 / n
    );
    let per_subscription = peak_kib.saturating_sub(base_kib) as f64 / n;
    println!(
        "  operator RSS            base {} MiB, peak {} MiB, at the end {} MiB: {per_subscription:.1} KiB per Subscription above the base (peak)",
        base_kib / 1024,
        peak_kib / 1024,
        final_kib / 1024
    );
    println!("API requests per Subscription (operator only), by verb and resource:");
    let mut by_verb: BTreeMap<String, usize> = BTreeMap::new();
    for ((verb, resource), requests) in sandbox.requests().counts() {
        *by_verb.entry(verb.to_string()).or_default() += requests;
        println!(
            "  {:<8} {:<28} {:>8.2}",
            verb.as_str(),
            resource,
            requests as f64 / n
        );
    }
    let writes: usize = by_verb
        .iter()
        .filter(|(v, _)| matches!(v.as_str(), "create" | "update" | "patch" | "delete"))
        .map(|(_, n)| n)
        .sum();
    let requests: usize = by_verb.values().sum();
    println!(
        "  total writes            {:>10.2}  (ideal: finalizer + namespace create + 5 child applies + status = 8, plus Events)",
        writes as f64 / n
    );
    println!(
        "  all requests            {:>10.2}  ({:.0} requests/s)",
        requests as f64 / n,
        requests as f64 / elapsed.as_secs_f64()
    );
    let ideal = IDEAL_WRITES * n / calibrated;
    let ratio = ideal / elapsed.as_secs_f64();
    println!(
        "  ideal                   {:>10.2?}  (8 writes/Subscription at the {calibrated:.0} applies/s the sandbox sustains from {CALIBRATION_CLIENTS} clients); achieved {ratio:.2}× of it",
        Duration::from_secs_f64(ideal)
    );
    Ok(Figures {
        count,
        elapsed,
        rate,
        busy_p50: quantile(&busy, 0.5),
        busy_p99: quantile(&busy, 0.99),
        writes: writes as f64 / n,
        reconciles: reconciles / n,
        kib_per_subscription: per_subscription,
        ratio,
    })
}

/// The rate of server-side applies (creating ConfigMaps) the sandbox sustains from
/// [`CALIBRATION_CLIENTS`] clients, each waiting for its answer before sending the next.
async fn calibrate(sandbox: &Sandbox) -> anyhow::Result<f64> {
    let client = sandbox.client();
    let namespace = "bench-calibration";
    let mut ns = Namespace::default();
    ns.metadata.name = Some(namespace.into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients = (0..CALIBRATION_CLIENTS).map(|c| {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let done = done.clone();
        async move {
            let params = PatchParams::apply("bench").force();
            let mut i = 0;
            while started.elapsed() < CALIBRATION_TIME {
                let name = format!("calibration-{c}-{i}");
                let cm: ConfigMap = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "labels": {"bench": "calibration"}},
                    "data": {"plan": "team", "sso": "true"}
                }))?;
                api.patch(&name, &params, &Patch::Apply(&cm)).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(clients).await?;
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    sandbox.requests().reset();
    Ok(rate)
}

/// A counter of the Subscriptions whose `status.phase` is `Active`, kept up to date from the
/// store's change feed (listing 50,000 objects every few milliseconds would slow the sandbox).
fn count_active(sandbox: &Sandbox, key: &ResourceKey) -> anyhow::Result<Arc<AtomicUsize>> {
    let subscription = sandbox
        .store()
        .watch(key, None, WatchStart::Now)
        .map_err(|e| anyhow::anyhow!("watching subscriptions: {}", e.body))?;
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let key = key.clone();
    let store = sandbox.store().clone();
    tokio::spawn(async move {
        let mut active: HashSet<String> = HashSet::new();
        let note = |active: &mut HashSet<String>, object: &Value, change: ChangeType| {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let is_active = change != ChangeType::Deleted
                && object.pointer("/status/phase").and_then(Value::as_str) == Some("Active");
            if is_active {
                active.insert(name);
            } else {
                active.remove(&name);
            }
            counter.store(active.len(), Ordering::Relaxed);
        };
        for change in &subscription.initial {
            note(&mut active, &change.object, change.change);
        }
        let mut receiver = subscription.receiver;
        loop {
            match receiver.recv().await {
                Ok(change) if change.resource == key => {
                    note(&mut active, &change.object, change.change);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the change feed: count again from the store.
                    let page = store.list(
                        &key,
                        None,
                        &flotilla_sandbox::selector::LabelSelector::parse("").expect("selector"),
                        &flotilla_sandbox::selector::FieldSelector::parse("").expect("selector"),
                        None,
                        None,
                    );
                    active.clear();
                    for object in page.map(|page| page.items).unwrap_or_default() {
                        note(&mut active, &object, ChangeType::Modified);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    Ok(count)
}
