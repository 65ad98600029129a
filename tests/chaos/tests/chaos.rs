//! The operator as its own process under chaos (see `docs/chaos.md`): SIGKILLed at seeded
//! random moments while API faults are injected, then two replicas with leader election whose
//! leader is SIGKILLed again and again. Either way every invariant must hold at the end. The
//! seed is printed; `FLOTILLA_CHAOS_SEED=<n>` repeats a run, `FLOTILLA_CHAOS_KILLS=<n>` runs
//! longer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_chaos::faults::Injector;
use flotilla_chaos::process::{LEASE_NAME, OperatorProcess};
use flotilla_chaos::{Figures, Rng, Workload, World, kills_from_env};
use flotilla_crds::{Campaign, CampaignPhase, FirmwareRollout, FirmwareRolloutPhase};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

/// The operator binary: this package's copy of `flotilla` (see Cargo.toml).
const BINARY: &str = env!("CARGO_BIN_EXE_flotilla-under-chaos");

/// SIGKILLs per run unless `FLOTILLA_CHAOS_KILLS` says otherwise.
const KILLS: usize = 20;

fn workload() -> Workload {
    Workload {
        tenants: 6,
        late_tenants: 3,
        doomed: 2,
        readers: 40,
        opted_out_every: 8,
        devices: 30,
        max_in_flight: 3,
        messages_per_minute: 180,
        holdout_percent: 10,
    }
}

/// Whether the rollout and the campaign are still under way.
async fn in_progress(world: &World) -> (bool, bool) {
    let rollout = Api::<FirmwareRollout>::namespaced(world.client.clone(), "fleet")
        .get_opt("chaos-update")
        .await
        .ok()
        .flatten()
        .and_then(|r| r.status?.phase);
    let campaign = Api::<Campaign>::namespaced(world.client.clone(), "news")
        .get_opt("chaos-news")
        .await
        .ok()
        .flatten()
        .and_then(|c| c.status?.phase);
    (
        rollout != Some(FirmwareRolloutPhase::Succeeded),
        campaign != Some(CampaignPhase::Completed),
    )
}

/// `result`, with the end of the operators' logs when it failed.
fn with_logs<T>(world: &World, names: &[&str], result: anyhow::Result<T>) -> anyhow::Result<T> {
    result.map_err(|error| {
        let logs: Vec<String> = names
            .iter()
            .map(|n| format!("--- {n} ---\n{}", world.launch.log_tail(n, 40)))
            .collect();
        error.context(logs.join("\n"))
    })
}

fn record_faults(figures: &mut Figures, world: &World, injector: &Injector) {
    let armed: Vec<String> = injector
        .armed
        .iter()
        .map(|(kind, n)| format!("{kind:?} {n}"))
        .collect();
    figures.record("faults injected, by kind", armed.join(", "));
    let fired: BTreeMap<u16, usize> = world.sandbox.faults().fired();
    let fired_text: Vec<String> = fired.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    figures.record(
        "requests failed by an injected status",
        format!(
            "{} ({})",
            fired.values().sum::<usize>(),
            fired_text.join(", ")
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkills_and_api_faults_leave_every_invariant_intact() -> anyhow::Result<()> {
    let began = Instant::now();
    let mut rng = Rng::from_env();
    let kills_wanted = kills_from_env(KILLS);
    let mut world = World::start(BINARY, workload(), None).await?;
    let mut operator = world.launch.spawn("solo")?;
    let prepared = world.prepare().await;
    with_logs(&world, &["solo"], prepared)?;
    world.start_campaign_and_rollout().await?;

    let mut injector = Injector::default();
    let (mut kills, mut during_rollout, mut during_campaign) = (0, 0, 0);
    let (mut late_created, mut doomed_deleted) = (false, false);
    let chaos_began = Instant::now();
    while kills < kills_wanted {
        tokio::time::sleep(rng.millis(100, 600)).await;
        // A fault at every step, a kill at three steps of five.
        injector.inject(&world.sandbox, &mut rng);
        if rng.below(5) < 3 {
            let (rollout, campaign) = in_progress(&world).await;
            let killed = operator.kill().await;
            with_logs(&world, &["solo"], killed)?;
            kills += 1;
            during_rollout += usize::from(rollout);
            during_campaign += usize::from(campaign);
            // Restarted at once or after a pause, as a kubelet would.
            println!("kill {kills} at {:.1?}", chaos_began.elapsed());
            tokio::time::sleep(rng.millis(1, 400)).await;
            operator = world.launch.spawn("solo")?;
        }
        if !late_created && kills >= kills_wanted / 4 {
            world.create_late_tenants().await?;
            late_created = true;
        }
        if !doomed_deleted && kills >= kills_wanted / 2 {
            world.delete_doomed().await?;
            doomed_deleted = true;
        }
    }
    injector.stop(&world.sandbox);
    let chaos_ended = Instant::now();

    let mut figures = Figures::default();
    figures.record("operator SIGKILLs (restarted each time)", kills);
    figures.record(
        "kills while the rollout / the campaign were under way",
        format!("{during_rollout} / {during_campaign}"),
    );
    figures.record("chaos phase", format!("{:.1?}", chaos_ended - chaos_began));
    record_faults(&mut figures, &world, &injector);
    let checked = world.check(&mut figures, chaos_ended).await;
    with_logs(&world, &["solo"], checked)?;
    operator.kill().await?;
    figures.record("test wall time", format!("{:.1?}", began.elapsed()));
    println!("{figures}");
    // The kills must have hit work in progress, or they proved nothing.
    assert!(
        during_rollout >= 3 && during_campaign >= 3,
        "only {during_rollout} kills during the rollout and {during_campaign} during the campaign"
    );
    Ok(())
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE_NAME)
        .await
        .ok()??
        .spec?
        .holder_identity
}

/// Lease validity of the replicas (`--lease-duration`).
const LEASE_SECONDS: u64 = 3;
/// How much later than the Lease's expiry the standby may take over: it polls the Lease,
/// and the machine is busy.
const TAKEOVER_MARGIN: Duration = Duration::from_millis(2500);
/// Leader kills per run.
const LEADER_KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_a_sigkilled_leader_within_the_lease_and_duplicates_nothing()
-> anyhow::Result<()> {
    let began = Instant::now();
    let mut rng = Rng::from_env();
    let workload = Workload {
        tenants: 6,
        late_tenants: 2,
        doomed: 2,
        readers: 30,
        messages_per_minute: 150,
        ..workload()
    };
    let mut world = World::start(BINARY, workload, Some(LEASE_SECONDS)).await?;
    let leases: Api<Lease> = Api::namespaced(
        world.client.clone(),
        flotilla_testkit::rbac::OPERATOR_NAMESPACE,
    );
    let names = ["replica-a", "replica-b"];
    let mut replicas: BTreeMap<String, OperatorProcess> = BTreeMap::new();
    for name in names {
        replicas.insert(name.to_owned(), world.launch.spawn(name)?);
    }
    let prepared = world.prepare().await;
    with_logs(&world, &names, prepared)?;
    world.start_campaign_and_rollout().await?;

    let mut takeovers = Vec::new();
    let mut during_work = 0;
    for round in 0..LEADER_KILLS {
        tokio::time::sleep(rng.millis(300, 1500)).await;
        let leader = holder(&leases).await.expect("a leader holds the Lease");
        let standby = names
            .iter()
            .find(|n| **n != leader)
            .expect("two replicas")
            .to_string();
        let (rollout, campaign) = in_progress(&world).await;
        during_work += usize::from(rollout || campaign);
        let process = replicas.remove(&leader).expect("the leader is one of ours");
        let killed = process.kill().await;
        with_logs(&world, &names, killed)?;
        let killed_at = Instant::now();
        let deadline = Duration::from_secs(LEASE_SECONDS) + TAKEOVER_MARGIN;
        loop {
            if holder(&leases).await.as_deref() == Some(standby.as_str()) {
                break;
            }
            let waited = killed_at.elapsed();
            assert!(
                waited < deadline * 3,
                "round {round}: {standby} did not take over from {leader} in {waited:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let takeover = killed_at.elapsed();
        println!("round {round}: {leader} SIGKILLed, {standby} led after {takeover:.2?}");
        takeovers.push(takeover);
        if round == 1 {
            world.create_late_tenants().await?;
            world.delete_doomed().await?;
        }
        // The killed replica comes back (a new pod of the same name) as the standby.
        replicas.insert(leader.clone(), world.launch.spawn(&leader)?);
    }
    let chaos_ended = Instant::now();

    let mut figures = Figures::default();
    figures.record("leader SIGKILLs (alternating replicas)", takeovers.len());
    figures.record(
        "kills while the rollout or campaign were under way",
        during_work,
    );
    let shown: Vec<String> = takeovers.iter().map(|t| format!("{t:.2?}")).collect();
    figures.record(
        format!("takeover times (Lease {LEASE_SECONDS}s)"),
        shown.join(", "),
    );
    let checked = world.check(&mut figures, chaos_ended).await;
    with_logs(&world, &names, checked)?;
    for (name, mut process) in replicas {
        let running = process.ensure_running();
        with_logs(&world, &[name.as_str()], running)?;
        process.kill().await?;
    }
    figures.record("test wall time", format!("{:.1?}", began.elapsed()));
    println!("{figures}");
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    assert!(
        slowest <= Duration::from_secs(LEASE_SECONDS) + TAKEOVER_MARGIN,
        "a takeover took {slowest:?}, more than the Lease ({LEASE_SECONDS}s) + {TAKEOVER_MARGIN:?}"
    );
    assert!(
        during_work >= LEADER_KILLS / 2,
        "only {during_work} leader kills hit work in progress"
    );
    Ok(())
}
