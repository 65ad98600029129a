//! The Plan controller, through the real kube-runtime `Controller`, against the sandbox.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::client::SentRequest;
use common::{BACKOFF_BASE, FORBIDDEN_BACKOFF, Harness, WAIT, invalid_plan, plan, subscription};
use flotilla_crds::condition::{find_condition, reasons, types};
use flotilla_crds::{Plan, PlanPhase, Subscription};
use flotilla_runtime::ManualClock;
use flotilla_runtime::finalizer::FINALIZER;
use flotilla_runtime::testing::wait_for;
use flotilla_sandbox::{FaultRule, Verb};
use http::Method;
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

/// The time between consecutive requests.
fn gaps(requests: &[SentRequest]) -> Vec<Duration> {
    requests
        .windows(2)
        .map(|pair| pair[1].sent - pair[0].sent)
        .collect()
}

/// A Ready Plan "team" and a quiet controller: the fault tests start from here, so that the
/// only trigger after the fault is the spec change (the first pass also adds the finalizer,
/// whose own watch event would reconcile at once).
async fn settled_plan(h: &Harness) {
    h.create::<Plan>(plan("team")).await;
    wait_for_plan(h, "team", "Ready", |p| {
        phase(p) == Some(PlanPhase::Ready) && observed_current(p)
    })
    .await;
    h.quiet("plan").await;
}

/// A new spec for "team": its status must be written again.
async fn change_spec(h: &Harness) {
    let spec = serde_json::json!({"spec": {"displayName": "Team, renamed"}});
    Api::<Plan>::all(h.client.clone())
        .patch("team", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .expect("spec");
}

fn observed_current(plan: &Plan) -> bool {
    plan.status.as_ref().and_then(|s| s.observed_generation) == plan.metadata.generation
}

/// The writes from the first failed one on (the settled Plan's writes all succeeded).
fn after_the_change(writes: Vec<SentRequest>) -> Vec<SentRequest> {
    writes
        .into_iter()
        .skip_while(|w| w.status == Some(200))
        .collect()
}

const TRANSIENT: &str = r#"flotilla_reconcile_errors_total{class="transient",controller="plan"}"#;
const FORBIDDEN: &str = r#"flotilla_reconcile_errors_total{class="forbidden",controller="plan"}"#;
const PERMANENT: &str = r#"flotilla_reconcile_errors_total{class="permanent",controller="plan"}"#;

#[tokio::test]
async fn a_failed_status_write_is_retried_after_a_backoff() {
    let h = Harness::start().await;
    h.ready().await;
    settled_plan(&h).await;
    h.sandbox().faults().inject(
        FaultRule::new(Verb::Patch, "plans")
            .subresource("status")
            .status(500)
            .times(1),
    );
    change_spec(&h).await;
    wait_for_plan(&h, "team", "Ready despite a 500", |p| {
        phase(p) == Some(PlanPhase::Ready) && observed_current(p)
    })
    .await;
    // The 500 reached the controller (the client does not retry it), which counted a
    // transient failure and retried after its backoff.
    let writes = after_the_change(h.log.requests(&Method::PATCH, "/plans/team/status"));
    let statuses: Vec<_> = writes.iter().map(|w| w.status).collect();
    assert_eq!(statuses[..2], [Some(500), Some(200)], "{writes:?}");
    assert_eq!(h.metric(TRANSIENT), 1.0);
    assert_eq!(h.metric(PERMANENT), 0.0);
    assert!(gaps(&writes)[0] >= BACKOFF_BASE, "{:?}", gaps(&writes));
    h.stop().await;
}

#[tokio::test]
async fn throttling_with_retry_after_is_honoured() {
    let h = Harness::start().await;
    h.ready().await;
    settled_plan(&h).await;
    h.sandbox().faults().inject(
        FaultRule::new(Verb::Patch, "plans")
            .subresource("status")
            .status(429)
            .retry_after(1)
            .times(2),
    );
    change_spec(&h).await;
    wait_for_plan(&h, "team", "Ready despite 429s", |p| {
        phase(p) == Some(PlanPhase::Ready) && observed_current(p)
    })
    .await;
    // Both 429s reached the controller, and each retry waited for the Retry-After (1 s),
    // longer than any backoff of the harness (at most BACKOFF_CAP).
    let writes = after_the_change(h.log.requests(&Method::PATCH, "/plans/team/status"));
    let statuses: Vec<_> = writes.iter().map(|w| w.status).collect();
    assert_eq!(
        statuses[..3],
        [Some(429), Some(429), Some(200)],
        "{writes:?}"
    );
    assert_eq!(h.metric(TRANSIENT), 2.0);
    for gap in &gaps(&writes)[..2] {
        assert!(*gap >= Duration::from_secs(1), "{:?}", gaps(&writes));
    }
    h.stop().await;
}

#[tokio::test]
async fn a_forbidden_write_is_retried_slowly_with_one_warning() {
    let h = Harness::start().await;
    h.ready().await;
    settled_plan(&h).await;
    // RBAC fixed after the operator started: the operator's ClusterRole lacks the Plan status
    // grant (the sandbox enforces it) until two status writes have been refused.
    h.expect_denials();
    let grant = flotilla_testkit::rbac::grants_of(&flotilla_testkit::rbac::operator_user())
        .into_iter()
        .find(|g| g.to_string() == "patch flotilla.dev/plans/status")
        .expect("role.yaml grants the Plan status");
    let rules_of = |objects: Vec<(String, serde_json::Value)>| {
        objects
            .into_iter()
            .find(|(_, o)| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "flotilla")
            .map(|(_, o)| o["rules"].clone())
            .expect("the operator's ClusterRole")
    };
    let cluster_roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(h.client.clone());
    let set_rules = |rules: serde_json::Value| {
        let cluster_roles = cluster_roles.clone();
        async move {
            cluster_roles
                .patch(
                    "flotilla",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "rules": rules })),
                )
                .await
                .expect("the ClusterRole patched")
        }
    };
    set_rules(rules_of(flotilla_testkit::rbac::objects_without(Some(
        &grant,
    ))))
    .await;
    change_spec(&h).await;
    wait_for(
        "two refused status writes",
        WAIT + FORBIDDEN_BACKOFF,
        || async {
            let refused = h
                .log
                .statuses(&Method::PATCH, "/plans/team/status")
                .iter()
                .filter(|s| **s == 403)
                .count();
            (refused >= 2).then_some(())
        },
    )
    .await
    .expect("refused");
    set_rules(rules_of(flotilla_testkit::rbac::objects_without(None))).await;
    wait_for(
        "Ready once the writes are allowed",
        WAIT + FORBIDDEN_BACKOFF * 2,
        || async {
            Api::<Plan>::all(h.client.clone())
                .get_opt("team")
                .await
                .ok()
                .flatten()
                .filter(|p| phase(p) == Some(PlanPhase::Ready) && observed_current(p))
        },
    )
    .await
    .expect("Ready");
    let writes = after_the_change(h.log.requests(&Method::PATCH, "/plans/team/status"));
    let statuses: Vec<_> = writes.iter().map(|w| w.status).collect();
    assert_eq!(
        statuses[..3],
        [Some(403), Some(403), Some(200)],
        "{writes:?}"
    );
    assert_eq!(h.metric(FORBIDDEN), 2.0);
    assert_eq!(h.metric(PERMANENT), 0.0, "a 403 is not given up on");
    // The sandbox's RBAC refused them, as the operator's ServiceAccount.
    let refused = h.operator_denied();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused
            .iter()
            .all(|r| r.starts_with("403 patch flotilla.dev/plans/status team (")),
        "{refused:#?}"
    );
    // Retried, but never sooner than the forbidden backoff (above any transient delay).
    for gap in &gaps(&writes)[..2] {
        assert!(*gap >= FORBIDDEN_BACKOFF, "{:?}", gaps(&writes));
    }
    // One Warning for the streak, not one per retry.
    let warnings: Vec<_> = h
        .events_about("Plan", "team")
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].reason.as_deref(), Some("StatusWriteFailed"));
    assert_eq!(
        warnings[0].series.as_ref().map(|s| s.count),
        None,
        "not repeated"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_cut_watch_is_resumed() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    wait_for_plan(&h, "team", "Ready", |p| phase(p) == Some(PlanPhase::Ready)).await;
    h.ready().await;

    let before = h.watches_served();
    h.sandbox().faults().cut_watches();
    h.wait_for_rewatches(&before, &[("subscriptions", 1), ("plans", 1)])
        .await;
    h.create::<Subscription>(subscription("acme", "team")).await;
    wait_for_plan(&h, "team", "1 subscription after a cut watch", |p| {
        subscriptions(p) == Some(1)
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn a_subscription_deleted_while_the_watch_was_down_is_found_by_the_re_list() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    h.create::<Subscription>(subscription("acme", "team")).await;
    wait_for_plan(&h, "team", "1 subscription", |p| {
        subscriptions(p) == Some(1)
    })
    .await;
    h.ready().await;

    // The Subscription watches go down and stay down (every re-watch fails); the other
    // watches resume at once.
    let faults = h.sandbox().faults();
    faults.inject(
        FaultRule::new(Verb::Watch, "subscriptions")
            .status(503)
            .times(1_000),
    );
    let before = h.watches_served();
    faults.cut_watches();
    h.wait_for_rewatches(&before, &[("plans", 1), ("namespaces", 1)])
        .await;

    // Meanwhile the Subscription goes for good (deleted, then its finalizer removed by hand),
    // and the history is compacted: resuming the Subscription watches now gets 410 Gone.
    // Deleted first: a live Subscription without the finalizer gets it back from the next
    // reconcile that sees it (a stale one re-reads it), while a deleting one gets no new
    // finalizers.
    let subs: Api<Subscription> = Api::all(h.client.clone());
    subs.delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    let unfinalized = serde_json::json!({"metadata": {"finalizers": null}});
    match subs
        .patch("acme", &PatchParams::default(), &Patch::Merge(&unfinalized))
        .await
    {
        Ok(_) => {}
        // The controller's cleanup finished first.
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => panic!("remove the finalizer: {error}"),
    }
    assert!(subs.get_opt("acme").await.expect("get").is_none(), "gone");
    h.sandbox().store().compact();
    let lists_before = h.sandbox().requests().count(Verb::List, "subscriptions");
    assert_eq!(
        subscriptions(
            &Api::<Plan>::all(h.client.clone())
                .get("team")
                .await
                .expect("get")
        ),
        Some(1),
        "nothing told the Plan controller yet"
    );

    // The watches resume, get 410 Gone, re-list, and the index finds what the re-list lacks.
    faults.clear();
    wait_for_plan(&h, "team", "0 subscriptions after a re-list", |p| {
        subscriptions(p) == Some(0)
    })
    .await;
    assert!(
        h.sandbox().requests().count(Verb::List, "subscriptions") > lists_before,
        "the watchers re-listed"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_failed_list_during_deletion_is_retried_with_growing_delays() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    wait_for_plan(&h, "team", "Ready", |p| phase(p) == Some(PlanPhase::Ready)).await;
    h.ready().await;
    h.quiet("plan").await;
    h.sandbox().faults().inject(
        FaultRule::new(Verb::List, "subscriptions")
            .status(503)
            .times(2),
    );
    let deleted_at = tokio::time::Instant::now();
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
    // Both 503s reached the controller (kube's client would have retried them itself), and
    // each retry waited longer than the one before: d·(1+U) with d = 50 ms, then 100 ms.
    let lists: Vec<_> = h
        .log
        .requests(&Method::GET, "/apis/flotilla.dev/v1alpha1/subscriptions")
        .into_iter()
        .filter(|r| r.sent >= deleted_at)
        .collect();
    let statuses: Vec<_> = lists.iter().map(|l| l.status).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)], "{lists:?}");
    assert_eq!(h.metric(TRANSIENT), 2.0);
    let gaps = gaps(&lists);
    assert!(gaps[0] >= BACKOFF_BASE, "{gaps:?}");
    assert!(gaps[1] >= BACKOFF_BASE * 2, "{gaps:?}");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_drains_the_controllers() {
    let h = Harness::start().await;
    h.ready().await;
    // `stop` fails the test if the controllers do not return after the signal.
    h.stop().await;
}
