//! A Plan's life as a platform team sees it: apply the sample Plan, see it Ready, see a
//! Subscription counted, delete the Plan and watch the deletion wait for the Subscription.

use flotilla::testing::wait_for;
use flotilla_crds::condition::{find_condition, reasons, types};
use flotilla_crds::{Plan, PlanPhase, Subscription};
use flotilla_e2e::{Environment, FIELD_MANAGER, samples_of_kind, step_timeout};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

#[tokio::test]
async fn a_plan_from_the_samples_lives_and_dies_with_its_subscriptions() -> anyhow::Result<()> {
    let env = Environment::start().await?;
    let timeout = step_timeout(&env);
    let plans: Api<Plan> = Api::all(env.client.clone());
    let subscriptions: Api<Subscription> = Api::all(env.client.clone());

    // Apply the first sample Plan under this run's name.
    let mut sample = samples_of_kind("Plan")?.remove(0);
    let plan_name = env.name(sample["metadata"]["name"].as_str().unwrap_or("plan"));
    sample["metadata"] = serde_json::json!({ "name": plan_name });
    plans
        .patch(
            &plan_name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&sample),
        )
        .await?;
    wait_for(format!("Plan {plan_name} Ready"), timeout, || async {
        let plan = plans.get_opt(&plan_name).await.ok().flatten()?;
        let status = plan.status?;
        let ready = find_condition(&status.conditions, types::READY)?;
        (status.phase == Some(PlanPhase::Ready) && ready.status == "True").then_some(())
    })
    .await?;

    // A Subscription on it is counted.
    let subscription_name = env.name("acme");
    let subscription: Subscription = serde_json::from_value(serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Subscription",
        "metadata": { "name": subscription_name },
        // Delete: the tenant namespace goes with the Subscription, nothing is left behind.
        "spec": { "plan": plan_name, "deletionPolicy": "Delete" },
    }))?;
    subscriptions
        .create(&PostParams::default(), &subscription)
        .await?;
    wait_for(
        format!("Plan {plan_name} to count 1 Subscription"),
        timeout,
        || async {
            let plan = plans.get_opt(&plan_name).await.ok().flatten()?;
            (plan.status?.subscriptions == 1).then_some(())
        },
    )
    .await?;

    // Deleting the Plan waits for the Subscription, and says so.
    plans.delete(&plan_name, &DeleteParams::default()).await?;
    let message = wait_for(
        format!("Plan {plan_name} to block its deletion"),
        timeout,
        || async {
            let plan = plans.get_opt(&plan_name).await.ok().flatten()?;
            let status = plan.status?;
            let in_use = find_condition(&status.conditions, types::IN_USE)?;
            (status.phase == Some(PlanPhase::Terminating)
                && in_use.reason == reasons::DELETION_BLOCKED)
                .then(|| in_use.message.clone())
        },
    )
    .await?;
    assert!(message.contains(&subscription_name), "{message}");

    // Once the Subscription goes, so does the Plan.
    subscriptions
        .delete(&subscription_name, &DeleteParams::default())
        .await?;
    wait_for(
        format!("Plan {plan_name} to be deleted"),
        timeout,
        || async { matches!(plans.get_opt(&plan_name).await, Ok(None)).then_some(()) },
    )
    .await?;

    env.stop().await
}
