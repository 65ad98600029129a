//! The Plan controller, through the real kube-runtime `Controller`, against the sandbox.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, WAIT, invalid_plan, plan, subscription};
use flotilla_crds::condition::{find_condition, reasons, types};
use flotilla_crds::{Plan, PlanPhase, Subscription};
use flotilla_runtime::ManualClock;
use flotilla_runtime::finalizer::FINALIZER;
use flotilla_runtime::testing::wait_for;
use flotilla_sandbox::{FaultRule, Verb};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

/// Waits until the Plan `name` satisfies `check`, returning it.
async fn wait_for_plan(h: &Harness, name: &str, what: &str, check: impl Fn(&Plan) -> bool) -> Plan {
    let plans: Api<Plan> = Api::all(h.client.clone());
    wait_for(format!("Plan {name}: {what}"), WAIT, || {
        let plans = plans.clone();
        let check = &check;
        async move {
            plans
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .filter(|plan| check(plan))
        }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

fn phase(plan: &Plan) -> Option<PlanPhase> {
    plan.status.as_ref().and_then(|s| s.phase)
}

fn subscriptions(plan: &Plan) -> Option<i32> {
    plan.status.as_ref().map(|s| s.subscriptions)
}

fn condition<'a>(plan: &'a Plan, type_: &str) -> Option<&'a flotilla_crds::Condition> {
    find_condition(&plan.status.as_ref()?.conditions, type_)
}

fn is_current(plan: &Plan) -> bool {
    plan.status.as_ref().and_then(|s| s.observed_generation) == plan.metadata.generation
}

#[tokio::test]
async fn a_valid_plan_becomes_ready() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;

    let ready = wait_for_plan(&h, "team", "Ready", |p| phase(p) == Some(PlanPhase::Ready)).await;
    let status = ready.status.as_ref().expect("status");
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert_eq!(status.subscriptions, 0);
    let condition = condition(&ready, types::READY).expect("Ready condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", reasons::RECONCILED)
    );
    assert_eq!(condition.observed_generation, ready.metadata.generation);
    assert!(
        ready.finalizers().iter().any(|f| f == FINALIZER),
        "finalizer added"
    );

    h.ready().await;
    assert!(h.metric(r#"flotilla_reconciliations_total{controller="plan"}"#) >= 1.0);
    wait_for("the phase gauge to count the Plan", WAIT, || async {
        (h.metric(r#"flotilla_objects_by_phase{controller="plan",phase="Ready"}"#) == 1.0)
            .then_some(())
    })
    .await
    .expect("gauge");
    let events = wait_for("a Validated Event", WAIT, || async {
        let events = h.events_about("Plan", "team").await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Validated"))
            .then_some(events)
    })
    .await
    .expect("Event");
    assert!(events.iter().all(|e| e.type_.as_deref() == Some("Normal")));
    h.stop().await;
}

#[tokio::test]
async fn condition_times_come_from_the_operators_clock() {
    let start: jiff::Timestamp = "2030-01-01T09:00:00Z".parse().expect("timestamp");
    let clock = ManualClock::new(start);
    let h = Harness::start_with_clock(Arc::new(clock.clone())).await;
    h.create::<Plan>(invalid_plan("broken")).await;
    let invalid = wait_for_plan(&h, "broken", "Invalid", |p| {
        phase(p) == Some(PlanPhase::Invalid)
    })
    .await;
    let ready = condition(&invalid, types::READY).expect("Ready");
    assert_eq!(ready.last_transition_time.0, start);

    // Fixed an hour later (by the operator's clock): the condition's transition time says so.
    clock.advance(jiff::SignedDuration::from_hours(1));
    let plans: Api<Plan> = Api::all(h.client.clone());
    let fix = serde_json::json!({"spec": {"limitRange": {"defaultRequest": {"cpu": "100m"}}}});
    plans
        .patch("broken", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fix");
    let fixed = wait_for_plan(&h, "broken", "Ready", |p| {
        phase(p) == Some(PlanPhase::Ready)
    })
    .await;
    let ready = condition(&fixed, types::READY).expect("Ready");
    assert_eq!(
        ready.last_transition_time.0,
        "2030-01-01T10:00:00Z"
            .parse::<jiff::Timestamp>()
            .expect("timestamp")
    );
    h.stop().await;
}

#[tokio::test]
async fn an_invalid_plan_says_which_field_and_recovers_when_fixed() {
    let h = Harness::start().await;
    h.create::<Plan>(invalid_plan("broken")).await;

    let invalid = wait_for_plan(&h, "broken", "Invalid", |p| {
        phase(p) == Some(PlanPhase::Invalid)
    })
    .await;
    let ready = condition(&invalid, types::READY).expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reasons::INVALID_SPEC)
    );
    assert!(
        ready
            .message
            .contains("spec.limitRange.defaultRequest[cpu]"),
        "{}",
        ready.message
    );
    wait_for("an InvalidSpec warning", WAIT, || async {
        h.events_about("Plan", "broken")
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidSpec") && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await
    .expect("Event");

    // Fixing the spec (a new generation) makes the Plan Ready again.
    let plans: Api<Plan> = Api::all(h.client.clone());
    let fix = serde_json::json!({"spec": {"limitRange": {"defaultRequest": {"cpu": "100m"}}}});
    plans
        .patch("broken", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fix");
    let fixed = wait_for_plan(&h, "broken", "Ready after the fix", |p| {
        phase(p) == Some(PlanPhase::Ready) && is_current(p)
    })
    .await;
    assert_eq!(
        fixed.status.as_ref().and_then(|s| s.observed_generation),
        Some(2)
    );
    h.stop().await;
}

#[tokio::test]
async fn the_subscription_count_follows_subscriptions() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    h.create::<Plan>(plan("pro")).await;
    wait_for_plan(&h, "team", "Ready", |p| phase(p) == Some(PlanPhase::Ready)).await;

    h.create::<Subscription>(subscription("acme", "team")).await;
    h.create::<Subscription>(subscription("globex", "team"))
        .await;
    let used = wait_for_plan(&h, "team", "2 subscriptions", |p| {
        subscriptions(p) == Some(2)
    })
    .await;
    let in_use = condition(&used, types::IN_USE).expect("InUse");
    assert_eq!(in_use.status, "True");
    assert_eq!(
        in_use.message,
        "referenced by 2 Subscriptions: acme, globex"
    );

    // Moving a Subscription to another plan updates both plans.
    let subs: Api<Subscription> = Api::all(h.client.clone());
    let change = serde_json::json!({"spec": {"plan": "pro"}});
    subs.patch("globex", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("change plan");
    wait_for_plan(&h, "team", "1 subscription", |p| {
        subscriptions(p) == Some(1)
    })
    .await;
    wait_for_plan(&h, "pro", "1 subscription", |p| subscriptions(p) == Some(1)).await;

    subs.delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    let unused = wait_for_plan(&h, "team", "no subscriptions", |p| {
        subscriptions(p) == Some(0)
    })
    .await;
    assert_eq!(
        condition(&unused, types::IN_USE).map(|c| c.status.as_str()),
        Some("False")
    );
    h.stop().await;
}

#[tokio::test]
async fn deletion_waits_for_the_last_subscription() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    h.create::<Subscription>(subscription("acme", "team")).await;
    wait_for_plan(&h, "team", "1 subscription and the finalizer", |p| {
        subscriptions(p) == Some(1) && p.finalizers().iter().any(|f| f == FINALIZER)
    })
    .await;

    let plans: Api<Plan> = Api::all(h.client.clone());
    plans
        .delete("team", &DeleteParams::default())
        .await
        .expect("delete");
    let blocked = wait_for_plan(&h, "team", "Terminating", |p| {
        phase(p) == Some(PlanPhase::Terminating)
    })
    .await;
    assert!(blocked.metadata.deletion_timestamp.is_some());
    let in_use = condition(&blocked, types::IN_USE).expect("InUse");
    assert_eq!(
        (in_use.status.as_str(), in_use.reason.as_str()),
        ("True", reasons::DELETION_BLOCKED)
    );
    assert!(in_use.message.contains("acme"), "{}", in_use.message);
    let warning = wait_for(
        "a DeletionBlocked Event naming the Subscription",
        WAIT,
        || async {
            h.events_about("Plan", "team")
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("DeletionBlocked"))
        },
    )
    .await
    .expect("Event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.note.as_deref().unwrap_or("").contains("acme"));

    // Still there while referenced.
    assert!(plans.get_opt("team").await.expect("get").is_some());

    let subs: Api<Subscription> = Api::all(h.client.clone());
    subs.delete("acme", &DeleteParams::default())
        .await
        .expect("delete subscription");
    wait_for("the Plan to be gone", WAIT, || async {
        matches!(plans.get_opt("team").await, Ok(None)).then_some(())
    })
    .await
    .expect("released");
    h.stop().await;
}

#[tokio::test]
async fn an_unused_plan_is_deleted_at_once() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("free")).await;
    wait_for_plan(&h, "free", "Ready", |p| phase(p) == Some(PlanPhase::Ready)).await;
    let plans: Api<Plan> = Api::all(h.client.clone());
    plans
        .delete("free", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("the Plan to be gone", WAIT, || async {
        matches!(plans.get_opt("free").await, Ok(None)).then_some(())
    })
    .await
    .expect("released");
    h.stop().await;
}

#[tokio::test]
async fn a_steady_plan_costs_no_writes() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    h.create::<Plan>(plan("barrier")).await;
    wait_for_plan(&h, "team", "Ready", |p| phase(p) == Some(PlanPhase::Ready)).await;
    wait_for_plan(&h, "barrier", "Ready", |p| {
        phase(p) == Some(PlanPhase::Ready)
    })
    .await;
    h.ready().await;

    // Reconciles triggered by the controller's own writes must have finished first.
    let started = r#"flotilla_reconciliations_total{controller="plan"}"#;
    let finished = r#"flotilla_reconcile_duration_seconds_count{controller="plan"}"#;
    wait_for("no reconcile in flight", WAIT, || async {
        (h.metric(started) == h.metric(finished)).then_some(())
    })
    .await
    .expect("idle");
    let before = h.metric(started);
    h.sandbox().requests().reset();
    // Touch the Plan without changing what its reconcile reads: nothing happens.
    let plans: Api<Plan> = Api::all(h.client.clone());
    let label = serde_json::json!({"metadata": {"labels": {"tier": "gold"}}});
    plans
        .patch("team", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label");
    // A change of another Plan's spec, later on the same watch, is reconciled: by the time it
    // is, a reconcile the touch had caused would have started.
    let spec = serde_json::json!({"spec": {"displayName": "Barrier"}});
    plans
        .patch("barrier", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .expect("spec");
    wait_for_plan(&h, "barrier", "its new spec observed", |p| {
        p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
    })
    .await;
    assert_eq!(
        h.metric(started),
        before + 1.0,
        "only the barrier was reconciled"
    );
    let team_writes = h
        .sandbox()
        .requests()
        .snapshot()
        .into_iter()
        .filter(|r| r.verb == Verb::Patch && r.name.as_deref() == Some("team"))
        .count();
    assert_eq!(team_writes, 1, "the touch itself, nothing else");
    h.stop().await;
}

#[tokio::test]
async fn a_failed_status_write_is_retried() {
    let h = Harness::start().await;
    h.sandbox().faults().inject(
        FaultRule::new(Verb::Patch, "plans")
            .subresource("status")
            .status(500)
            .times(1),
    );
    h.create::<Plan>(plan("team")).await;
    wait_for_plan(&h, "team", "Ready despite a 500", |p| {
        phase(p) == Some(PlanPhase::Ready)
    })
    .await;
    assert!(
        h.sandbox().requests().count(Verb::Patch, "plans/status") >= 2,
        "the write was retried"
    );
    assert!(
        h.metric(r#"flotilla_reconcile_errors_total{class="transient",controller="plan"}"#) >= 1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn throttling_with_retry_after_is_honoured() {
    let h = Harness::start().await;
    h.ready().await;
    h.sandbox().faults().inject(
        FaultRule::new(Verb::Patch, "plans")
            .subresource("status")
            .status(429)
            .retry_after(1)
            .times(2),
    );
    let started = tokio::time::Instant::now();
    h.create::<Plan>(plan("team")).await;
    wait_for_plan(&h, "team", "Ready despite 429s", |p| {
        phase(p) == Some(PlanPhase::Ready)
    })
    .await;
    // kube's client does not retry by itself; the error policy waited at least Retry-After
    // after each of the two throttled writes.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    h.stop().await;
}

#[tokio::test]
async fn cut_and_expired_watches_are_resumed() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    wait_for_plan(&h, "team", "Ready", |p| phase(p) == Some(PlanPhase::Ready)).await;
    h.ready().await;

    h.sandbox().faults().cut_watches();
    h.create::<Subscription>(subscription("acme", "team")).await;
    wait_for_plan(&h, "team", "1 subscription after a cut watch", |p| {
        subscriptions(p) == Some(1)
    })
    .await;

    // History compacted: re-watches get 410 Gone and the watchers re-list. The Subscription
    // deleted meanwhile is found by comparing the re-list with what was known.
    h.sandbox().expire_watches();
    let subs: Api<Subscription> = Api::all(h.client.clone());
    subs.delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for_plan(&h, "team", "0 subscriptions after a re-list", |p| {
        subscriptions(p) == Some(0)
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn a_failed_list_during_deletion_is_retried() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    wait_for_plan(&h, "team", "Ready", |p| phase(p) == Some(PlanPhase::Ready)).await;
    h.ready().await;
    h.sandbox().faults().inject(
        FaultRule::new(Verb::List, "subscriptions")
            .status(503)
            .times(2),
    );
    let plans: Api<Plan> = Api::all(h.client.clone());
    plans
        .delete("team", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("the Plan to be gone", WAIT, || async {
        matches!(plans.get_opt("team").await, Ok(None)).then_some(())
    })
    .await
    .expect("released after the list recovered");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_drains_the_controllers() {
    let h = Harness::start().await;
    h.ready().await;
    // `stop` fails the test if the controllers do not return after the signal.
    h.stop().await;
}
