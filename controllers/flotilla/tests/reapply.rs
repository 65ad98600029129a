//! GitOps stability: once the operator has converged on `config/samples/`, applying the same
//! manifests again — with kubectl's client-side apply, and with server-side apply as Argo CD
//! and Flux do — makes the operator write nothing and changes no status. Judged from the
//! sandbox's request log (the operator's writes) and its resourceVersion (any change at all).
//!
//! kubectl is required in CI (`FLOTILLA_REQUIRE_KUBECTL=1`); elsewhere the test skips without it.

use std::sync::Arc;
use std::time::Duration;

use flotilla::ControllerName;
use flotilla::testing::wait_for;
use flotilla_crds::{Campaign, CampaignPhase, Plan, Subscription, SubscriptionPhase};
use flotilla_sandbox::Verb;
use flotilla_sandbox::kubectl::Kubectl;
use flotilla_testkit::{Harness, Spawn, rbac};
use kube::api::ListParams;

/// How long the store must stay unchanged to count as converged, and the window watched after
/// each re-apply. Longer than the controllers' backoff cap, status throttle and a trigger
/// campaign's round delay (5 s), so a reconcile that a re-apply triggers has run and written
/// (or not) by the end.
const QUIET: Duration = Duration::from_secs(6);
const CONVERGE_WITHIN: Duration = Duration::from_secs(90);

fn samples() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/samples").to_owned()
}

async fn start() -> Harness {
    let spawn: Spawn = Arc::new(|operator| {
        Box::pin(async move {
            flotilla::run_selected(
                &operator,
                ControllerName::ALL,
                flotilla_campaigns::Settings::default(),
            )
            .await;
        })
    });
    let h = Harness::start(spawn).await;
    h.ready().await;
    h
}

/// Waits until nothing in the sandbox has changed for [`QUIET`]; returns its resourceVersion.
async fn settle(h: &Harness) -> u64 {
    let store = h.sandbox().store();
    let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
    let mut last = store.resource_version();
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = store.resource_version();
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= QUIET {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still changing after {CONVERGE_WITHIN:?}: {}",
            writes_since(h, 0, None).join("\n")
        );
    }
}

/// `Some(())` once every Plan is reconciled at its generation, every Subscription Trialing or
/// Active at its generation, and the welcome Campaign Running with every Active Subscription
/// welcomed.
async fn unconverged(h: &Harness) -> Option<()> {
    let plans = kube::Api::<Plan>::all(h.client.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    let plans_done = plans.items.len() == 3
        && plans.items.iter().all(|p| {
            p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
        });
    let subscriptions = kube::Api::<Subscription>::all(h.client.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    let subscriptions_done = subscriptions.items.len() == 3
        && subscriptions.items.iter().all(|s| {
            let status = s.status.as_ref();
            status.and_then(|st| st.observed_generation) == s.metadata.generation
                && matches!(
                    status.and_then(|st| st.phase),
                    Some(SubscriptionPhase::Trialing | SubscriptionPhase::Active)
                )
        });
    let campaign = kube::Api::<Campaign>::namespaced(h.client.clone(), "marketing")
        .get_opt("welcome")
        .await
        .ok()??;
    let active = subscriptions
        .items
        .iter()
        .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(SubscriptionPhase::Active))
        .count();
    let status = campaign.status?;
    let counts = status.counts.unwrap_or_default();
    let campaign_done = status.phase == Some(CampaignPhase::Running)
        && counts.pending == 0
        && counts.sent == active as i64;
    (plans_done && subscriptions_done && campaign_done).then_some(())
}

/// Writes served since request `mark`, by `user` (any user when None), described.
fn writes_since(h: &Harness, mark: usize, user: Option<&str>) -> Vec<String> {
    h.sandbox().requests().snapshot()[mark..]
        .iter()
        .filter(|r| !matches!(r.verb, Verb::Get | Verb::List | Verb::Watch))
        .filter(|r| user.is_none_or(|u| r.user.as_deref() == Some(u)))
        .map(|r| format!("{} by {:?}", rbac::describe(r), r.user))
        .collect()
}

/// Applies the samples with `args`, waits [`QUIET`], and asserts that the operator wrote
/// nothing meanwhile; returns what kubectl printed.
async fn reapply(h: &Harness, kubectl: &Kubectl, args: &[&str]) -> String {
    let mark = h.sandbox().requests().len();
    let out = kubectl.run(args, None).await;
    tokio::time::sleep(QUIET).await;
    let operator = writes_since(h, mark, Some(&rbac::operator_user()));
    assert!(
        operator.is_empty(),
        "kubectl {args:?} made the operator write:\n{}",
        operator.join("\n")
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplying_the_samples_makes_the_operator_write_nothing() {
    if !Kubectl::available() {
        return;
    }
    let h = start().await;
    let kubectl = Kubectl::admin(h.sandbox()).expect("a kubeconfig");
    let samples = samples();
    kubectl.run(&["apply", "-f", &samples], None).await;
    // Converged means what the samples describe happened (a quiet store alone could be an
    // operator starved of CPU), and then nothing more changes.
    wait_for("the samples to converge", CONVERGE_WITHIN, || {
        unconverged(&h)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let converged = settle(&h).await;
    assert_eq!(
        unconverged(&h).await,
        Some(()),
        "still converged after settling"
    );

    // kubectl's own client-side apply: kubectl finds nothing to patch and says so.
    let out = reapply(&h, &kubectl, &["apply", "-f", &samples]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 10, "{out}");
    assert!(lines.iter().all(|l| l.ends_with(" unchanged")), "{out}");
    assert_eq!(
        h.sandbox().store().resource_version(),
        converged,
        "something changed: {}",
        writes_since(&h, 0, None).join("\n")
    );

    // Server-side apply as a GitOps agent: the first takes the fields over (managedFields
    // change, so the objects change and the operator reconciles them), the second changes
    // nothing at all. Neither makes the operator write.
    let ssa = [
        "apply",
        "--server-side",
        "--field-manager=gitops-agent",
        "--force-conflicts",
        "-f",
        &samples,
    ];
    reapply(&h, &kubectl, &ssa).await;
    let taken_over = h.sandbox().store().resource_version();
    assert!(taken_over > converged, "the take-over changed no object");
    let mark = h.sandbox().requests().len();
    reapply(&h, &kubectl, &ssa).await;
    assert_eq!(
        h.sandbox().store().resource_version(),
        taken_over,
        "a second identical server-side apply changed something: {}",
        writes_since(&h, mark, None).join("\n")
    );

    // The control: a manifest that does change makes the operator write, so the silence
    // above is the operator's, not the measurement's.
    let mark = h.sandbox().requests().len();
    let plan = std::fs::read_to_string(format!("{samples}/plan-starter.yaml")).unwrap();
    let changed = plan.replace("displayName: Starter", "displayName: Starter (2027)");
    assert_ne!(
        plan, changed,
        "plan-starter.yaml has no displayName: Starter"
    );
    kubectl.run(&["apply", "-f", "-"], Some(&changed)).await;
    wait_for(
        "the operator to report the changed Plan",
        CONVERGE_WITHIN,
        || {
            let written = writes_since(&h, mark, Some(&rbac::operator_user()));
            async move {
                written
                    .iter()
                    .any(|w| w.contains("plans/status"))
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    h.stop().await;
}
