//! Leader election against the sandbox: only the Lease holder runs controllers; a standby is
//! ready without them and takes over when the leader shuts down. The replicas run as the
//! operator's ServiceAccount in a sandbox that enforces `config/rbac/`, the Lease in the
//! operator's namespace, as installed; any refused request fails the test.

use std::sync::Arc;
use std::time::Duration;

use flotilla::runtime::leadership::{LeadershipError, LeaseSettings, run_while_leading};
use flotilla::runtime::{Config, Operator, Shutdown, SystemClock};
use flotilla::testing::wait_for;
use flotilla_crds::{Plan, PlanPhase};
use flotilla_sandbox::{Sandbox, Verb};
use flotilla_testkit::rbac;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::task::JoinHandle;

/// One replica: an operator competing for the Lease.
struct Replica {
    operator: Operator,
    task: JoinHandle<Result<(), LeadershipError>>,
}

fn replica(client: &Client, identity: &str) -> Replica {
    let operator = Operator::new(
        client.clone(),
        Config::default(),
        Arc::new(SystemClock),
        Shutdown::new(),
    )
    .expect("operator");
    let settings = LeaseSettings {
        // Short enough that a standby notices a released Lease within the test's patience.
        duration_seconds: 2,
        grace_seconds: 1,
        ..LeaseSettings::new(
            "flotilla-leader",
            rbac::OPERATOR_NAMESPACE,
            Some(identity.to_owned()),
        )
    };
    let running = operator.clone();
    let task = tokio::spawn(async move {
        run_while_leading(&running, &settings, |leading| async move {
            flotilla::run_controllers(&leading).await;
        })
        .await
    });
    Replica { operator, task }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("flotilla-leader")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

async fn create_plan(client: &Client, name: &str) {
    let plan: Plan = serde_json::from_value(plan(name)).expect("plan");
    Api::<Plan>::all(client.clone())
        .create(&PostParams::default(), &plan)
        .await
        .expect("create plan");
}

async fn wait_ready(client: &Client, name: &str) {
    let plans: Api<Plan> = Api::all(client.clone());
    wait_for(format!("Plan {name} Ready"), WAIT, || async {
        let plan = plans.get_opt(name).await.ok().flatten()?;
        (plan.status?.phase == Some(PlanPhase::Ready)).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let (sandbox, operator_client) = start().await;
    let client = sandbox.client();
    let leases: Api<Lease> = Api::namespaced(client.clone(), rbac::OPERATOR_NAMESPACE);

    let first = replica(&operator_client, "replica-a");
    let leader = wait_for("a leader", WAIT, || async { holder(&leases).await })
        .await
        .expect("leader elected");
    assert_eq!(leader, "replica-a");
    create_plan(&client, "team").await;
    wait_ready(&client, "team").await;

    // A standby is ready (leadership known) but runs no controller.
    let second = replica(&operator_client, "replica-b");
    let standby = second.operator.readiness.clone();
    wait_for("the standby to be ready", WAIT, || {
        let report = standby.report();
        async move { report.is_ready().then_some(report) }
    })
    .await
    .map(|report| assert_eq!(report.registered, 1, "only leadership: {report:?}"))
    .expect("standby ready");
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"));

    // The leader shuts down and releases the Lease; the standby takes over and reconciles.
    first.operator.shutdown.trigger();
    tokio::time::timeout(WAIT, first.task)
        .await
        .expect("the leader stops")
        .expect("task")
        .expect("clean stop");
    wait_for("replica-b to lead", WAIT, || async {
        (holder(&leases).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await
    .expect("takeover");
    create_plan(&client, "pro").await;
    wait_ready(&client, "pro").await;

    second.operator.shutdown.trigger();
    tokio::time::timeout(WAIT, second.task)
        .await
        .expect("the second leader stops")
        .expect("task")
        .expect("clean stop");
    // Acquiring, renewing, releasing and taking over needed exactly what
    // config/rbac/leader_election_role.yaml grants (the test itself only reads the Lease).
    let verbs: std::collections::BTreeSet<Verb> = sandbox
        .requests()
        .snapshot()
        .iter()
        .filter(|request| request.resource == "leases")
        .map(|request| request.verb)
        .collect();
    assert_eq!(
        verbs,
        [Verb::Get, Verb::Create, Verb::Patch].into(),
        "Lease verbs sent"
    );
    assert_no_denials(&sandbox);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_and_says_so() {
    let (sandbox, operator_client) = start().await;
    let client = sandbox.client();
    let leases: Api<Lease> = Api::namespaced(client.clone(), rbac::OPERATOR_NAMESPACE);
    let only = replica(&operator_client, "replica-a");
    wait_for("a leader", WAIT, || async { holder(&leases).await })
        .await
        .expect("leader elected");

    // Someone else takes the Lease over (as a replica would after a network partition).
    let takeover = serde_json::json!({"spec": {
        "holderIdentity": "intruder",
        "leaseDurationSeconds": 60,
        "renewTime": jiff::Timestamp::now().to_string(),
    }});
    leases
        .patch(
            "flotilla-leader",
            &PatchParams::default(),
            &Patch::Merge(&takeover),
        )
        .await
        .expect("take the Lease");

    let outcome = tokio::time::timeout(Duration::from_secs(20), only.task)
        .await
        .expect("the deposed leader stops")
        .expect("task");
    assert!(
        matches!(outcome, Err(LeadershipError::Lost { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some("intruder"),
        "the Lease is left alone"
    );
    assert_no_denials(&sandbox);
    sandbox.shutdown().await;
}

/// A sandbox enforcing `config/rbac/` (installed from the files) and a client of the
/// operator's ServiceAccount.
async fn start() -> (Sandbox, Client) {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .enforce_rbac()
        .start()
        .await
        .expect("sandbox");
    rbac::install(&sandbox).await;
    let client = Client::try_from(rbac::operator_kube_config(&sandbox)).expect("a client");
    (sandbox, client)
}

fn assert_no_denials(sandbox: &Sandbox) {
    let denied = rbac::denied_for(sandbox, &rbac::operator_user());
    assert!(denied.is_empty(), "refused: {denied:#?}");
}

/// How long any single wait in a test may take.
const WAIT: Duration = Duration::from_secs(10);

fn plan(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": name},
        "spec": {"displayName": "Team"},
    })
}
