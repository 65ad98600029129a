//! Benchmark: one FirmwareRollout over N simulated devices, through the real device gateway,
//! and what it cost. Prints figures, never fails on time:
//!
//! ```text
//! cargo bench -p flotilla --bench rollout
//! FLOTILLA_BENCH_DEVICES=10000,100000 cargo bench -p flotilla --bench rollout
//! ```
//!
//! - `FLOTILLA_BENCH_DEVICES`: comma-separated fleet sizes, each on a fresh sandbox (default
//!   10000).
//! - `FLOTILLA_BENCH_UPDATE_SECS`: the simulated update time (default 10).
//! - `FLOTILLA_BENCH_POLL_IDLE_SECS`: the gateway's idle polling sleep (default 10): a device
//!   sees its assignment on its next poll, so this adds to each round.
//! - `FLOTILLA_BENCH_DEADLINE_SECS`: when a run gives up waiting for a terminal phase (default
//!   3600).
//!
//! The sandbox and the simulated fleet run in this process; the operator (`flotilla run
//! --controllers release,rollout`) and the gateway (`flotilla gateway`) run as their own
//! processes, so their memory and CPU are their own. The rollout has waves of 1/10/50/100%,
//! `maxInFlight` 500 and no soak; the ideal is Σ over waves of ⌈devices/500⌉ × update time.
//! The gateway's poll throughput (with `wrk`) is the `gateway` benchmark's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_crds::{FirmwareRollout, FirmwareRolloutPhase};
use flotilla_sandbox::Sandbox;
use flotilla_sandbox::registry::ResourceKey;
use flotilla_sandbox::store::WriteOptions;
use flotilla_simulator::{FleetSpec, ModelShare};
use kube::Api;
use serde_json::json;

mod support;
use support::{Process, free_ports, histogram, metric_value, quantile, scrape, wait_ready};

const NAMESPACE: &str = "fleet";
const MAX_IN_FLIGHT: usize = 500;
const WAVES: [u32; 4] = [1, 10, 50, 100];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("FLOTILLA_BENCH_DEVICES")
        .unwrap_or_else(|_| "10000".into())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect();
    let update = Duration::from_secs(env_number("FLOTILLA_BENCH_UPDATE_SECS", 10));
    let idle = Duration::from_secs(env_number("FLOTILLA_BENCH_POLL_IDLE_SECS", 10));
    let mut figures = Vec::new();
    for devices in sizes {
        figures.push(run(devices, update, idle).await?);
    }
    println!("\nSummary (update {update:?}, idle poll {idle:?}, maxInFlight {MAX_IN_FLIGHT}):");
    println!(
        "  {:>7} {:>10} {:>10} {:>8} {:>12} {:>12} {:>12} {:>10} {:>10} {:>9} {:>9}",
        "devices",
        "Succeeded",
        "ideal",
        "ratio",
        "op writes/dev",
        "gw writes/s",
        "idle gw w/s",
        "status w/s",
        "p99 busy",
        "op MiB",
        "gw MiB"
    );
    for f in &figures {
        println!(
            "  {:>7} {:>9.1}s {:>9.1}s {:>8.2} {:>12.3} {:>12.1} {:>12.2} {:>10.2} {:>8.2}ms {:>9} {:>9}",
            f.devices,
            f.elapsed.as_secs_f64(),
            f.ideal.as_secs_f64(),
            f.ideal.as_secs_f64() / f.elapsed.as_secs_f64(),
            f.operator_writes_per_device,
            f.gateway_writes_per_second,
            f.idle_gateway_writes_per_second,
            f.status_writes_per_second,
            f.busy_p99 * 1e3,
            f.operator_peak_mib,
            f.gateway_peak_mib
        );
    }
    Ok(())
}

struct Figures {
    devices: usize,
    elapsed: Duration,
    ideal: Duration,
    operator_writes_per_device: f64,
    gateway_writes_per_second: f64,
    idle_gateway_writes_per_second: f64,
    status_writes_per_second: f64,
    busy_p99: f64,
    operator_peak_mib: u64,
    gateway_peak_mib: u64,
}

/// Σ over waves of ⌈devices in the wave / maxInFlight⌉ × update time.
fn ideal(devices: usize, update: Duration) -> Duration {
    let mut previous = 0;
    let mut rounds = 0;
    for percent in WAVES {
        let end = (devices * percent as usize).div_ceil(100).max(previous);
        rounds += (end - previous).div_ceil(MAX_IN_FLIGHT);
        previous = end;
    }
    update * rounds as u32
}

async fn run(devices: usize, update: Duration, idle: Duration) -> anyhow::Result<Figures> {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .watch_window((devices * 2).max(200_000))
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
    for (name, version) in [("fw-1-0-0", "1.0.0"), ("fw-2-0-0", "2.0.0")] {
        store
            .create(
                &ResourceKey::new("flotilla.dev", "firmwarereleases"),
                NAMESPACE,
                json!({
                    "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRelease",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"version": version, "compatibleModels": ["alpha", "beta"],
                             "artifact": {"url": format!("https://fw.example.com/{version}.bin"),
                                          "sha256": "ab".repeat(32), "sizeBytes": 4096}},
                }),
                &opts,
            )
            .map_err(|e| anyhow::anyhow!("release: {}", e.body))?;
    }

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig)?;
    let [gateway_port, gateway_admin, operator_admin] = free_ports::<3>()?;
    let spec = FleetSpec {
        gateway_url: format!("http://127.0.0.1:{gateway_port}"),
        namespace: NAMESPACE.into(),
        devices,
        models: vec![
            ModelShare {
                model: "alpha".into(),
                share: 1,
            },
            ModelShare {
                model: "beta".into(),
                share: 1,
            },
        ],
        starting_version: "1.0.0".into(),
        update_duration: update,
        update_jitter: Duration::ZERO,
        progress_steps: 2,
        start_spread: idle,
        max_in_flight_requests: 512,
        ..FleetSpec::default()
    };
    let provisioning = Instant::now();
    flotilla_simulator::provision(&client, &spec).await?;
    println!(
        "\n{devices} devices provisioned in {:.1?}",
        provisioning.elapsed()
    );

    let secs = |d: Duration| format!("{}s", d.as_secs().max(1));
    let mut gateway = Process::flotilla(
        &kubeconfig,
        &[
            "gateway".into(),
            "--listen".into(),
            format!("127.0.0.1:{gateway_port}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{gateway_admin}"),
            "--namespaces".into(),
            NAMESPACE.into(),
            "--poll-busy".into(),
            "1s".into(),
            "--poll-idle".into(),
            secs(idle),
            "--log-level".into(),
            "warn".into(),
        ],
    )?;
    wait_ready(gateway_admin).await?;
    let mut operator = Process::operator(&kubeconfig, operator_admin, "release,rollout")?;
    wait_ready(operator_admin).await?;
    let stop = flotilla_runtime::Shutdown::new();
    let fleet = flotilla_simulator::start(spec, stop.clone())?;
    // Every device polls once (spread over one idle sleep) before the rollout starts.
    tokio::time::sleep(idle + Duration::from_secs(2)).await;
    sandbox.requests().reset();

    store
        .create(
            &ResourceKey::new("flotilla.dev", "firmwarerollouts"),
            NAMESPACE,
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
                "metadata": {"name": "bench", "namespace": NAMESPACE},
                "spec": {
                    "release": "fw-2-0-0",
                    "selector": {"matchLabels": {"flotilla.dev/simulated": "sim"}},
                    "waves": WAVES.iter().map(|p| json!({"percent": p})).collect::<Vec<_>>(),
                    "maxInFlight": MAX_IN_FLIGHT,
                    "soakTime": "0s",
                    "deviceTimeout": "10m",
                    "offlineAfter": "10m",
                    "offlinePolicy": "Wait",
                    "failureThreshold": {"overall": {"percent": 50}},
                },
            }),
            &opts,
        )
        .map_err(|e| anyhow::anyhow!("rollout: {}", e.body))?;
    let started = Instant::now();
    let rollouts: Api<FirmwareRollout> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = started + Duration::from_secs(env_number("FLOTILLA_BENCH_DEADLINE_SECS", 3600));
    let mut last = String::new();
    let phase = loop {
        let rollout = rollouts.get("bench").await?;
        let status = rollout.status.unwrap_or_default();
        let line = format!(
            "  {:>6.1}s {:?} wave {:?} {:?}",
            started.elapsed().as_secs_f64(),
            status.phase,
            status.current_wave,
            status
                .counts
                .map(|c| (c.succeeded, c.updating, c.pending, c.failed))
        );
        if line != last && std::env::var_os("FLOTILLA_BENCH_VERBOSE").is_some() {
            println!("{line}");
        }
        last = line;
        if status.phase.is_some_and(FirmwareRolloutPhase::is_terminal) || Instant::now() > deadline
        {
            break status.phase;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let elapsed = started.elapsed();
    let counts = sandbox.requests().counts();
    // Writes the server refused (a conflict, a failed test op): each is retried, so each
    // is in the writes per device above.
    let mut refused: BTreeMap<(String, String, u16), usize> = BTreeMap::new();
    for record in sandbox.requests().snapshot() {
        let write = matches!(
            record.verb.as_str(),
            "create" | "update" | "patch" | "delete"
        );
        if write && record.status >= 300 {
            let key = (
                record.verb.as_str().to_owned(),
                record.full_resource(),
                record.status,
            );
            *refused.entry(key).or_default() += 1;
        }
    }

    // Steady state after the rollout: the gateway's writes while every device idles.
    sandbox.requests().reset();
    let quiet = Duration::from_secs(20).max(idle * 2);
    tokio::time::sleep(quiet).await;
    let idle_counts = sandbox.requests().counts();

    let metrics = scrape(operator_admin).await.unwrap_or_default();
    let busy = histogram(&metrics, "flotilla_reconcile_busy_seconds", "rollout");
    let reconciles = metric_value(&metrics, "flotilla_reconciliations_total", "rollout");
    let operator_peak = operator.status_kib("VmHWM:") / 1024;
    let gateway_peak = gateway.status_kib("VmHWM:") / 1024;
    stop.trigger();
    operator.stop();
    gateway.stop();
    drop(fleet);

    let n = devices as f64;
    let ideal = ideal(devices, update);
    // A device sees its assignment at its next poll, on average half an idle sleep later.
    let with_poll_delay = self::ideal(devices, update + idle / 2);
    println!(
        "{devices} devices: {phase:?} after {elapsed:.1?} (ideal {ideal:.1?}: {:.2}× of it; \
         {with_poll_delay:.1?} with the mean poll delay; {} cores)",
        ideal.as_secs_f64() / elapsed.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "  reconciles {reconciles:.0}; reconcile busy p50/p99 {:.2} ms / {:.2} ms",
        quantile(&busy, 0.5) * 1e3,
        quantile(&busy, 0.99) * 1e3
    );
    println!("  peak RSS: operator {operator_peak} MiB, gateway {gateway_peak} MiB");
    println!("  API requests during the rollout, per device, by verb and resource:");
    let is_write = |verb: &str| matches!(verb, "create" | "update" | "patch" | "delete");
    let mut operator_writes = 0;
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for ((verb, resource), requests) in &counts {
        println!(
            "    {:<8} {:<28} {:>10.4}  ({requests})",
            verb.as_str(),
            resource,
            *requests as f64 / n
        );
        if is_write(verb.as_str()) {
            if resource == "devices/status" {
                *by.entry("gateway").or_default() += requests;
            } else {
                operator_writes += requests;
            }
        }
    }
    println!("  writes refused during the rollout, by verb, resource and status:");
    for ((verb, resource, status), requests) in &refused {
        println!("    {verb:<8} {resource:<28} {status}  {requests}");
    }
    if refused.is_empty() {
        println!("    none");
    }
    let gateway_writes = by.get("gateway").copied().unwrap_or(0);
    let status_writes = counts
        .iter()
        .filter(|((verb, resource), _)| {
            verb.as_str() == "patch" && resource == "firmwarerollouts/status"
        })
        .map(|(_, n)| *n)
        .sum::<usize>();
    let idle_gateway = idle_counts
        .iter()
        .filter(|((verb, resource), _)| is_write(verb.as_str()) && resource == "devices/status")
        .map(|(_, n)| *n)
        .sum::<usize>();
    let figures = Figures {
        devices,
        elapsed,
        ideal,
        operator_writes_per_device: operator_writes as f64 / n,
        gateway_writes_per_second: gateway_writes as f64 / elapsed.as_secs_f64(),
        idle_gateway_writes_per_second: idle_gateway as f64 / quiet.as_secs_f64(),
        status_writes_per_second: status_writes as f64 / elapsed.as_secs_f64(),
        busy_p99: quantile(&busy, 0.99),
        operator_peak_mib: operator_peak,
        gateway_peak_mib: gateway_peak,
    };
    println!(
        "  operator writes/device {:.3} (target ≤ 1.05); gateway writes/s {:.1} during, {:.2} idle; rollout status writes/s {:.2}",
        figures.operator_writes_per_device,
        figures.gateway_writes_per_second,
        figures.idle_gateway_writes_per_second,
        figures.status_writes_per_second
    );
    Ok(figures)
}
