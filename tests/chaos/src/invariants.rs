//! The invariants a chaos run must end with, each asserted on what the run produced — the
//! objects in the sandbox, its request log, the Devices' reports (written by the gateway from
//! what the simulated devices said) and the webhook receiver — never on what the harness
//! wrote; and [`Figures`], the table they are printed as.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use flotilla_crds::common::labels;
use flotilla_crds::condition::{find_condition, types};
use flotilla_crds::{
    Campaign, CampaignPhase, Device, FirmwareRollout, FirmwareRolloutPhase, Plan, PlanPhase,
    SubscriptionPhase,
};
use flotilla_runtime::testing::wait_for;
use flotilla_sandbox::Verb;
use flotilla_testkit::rbac;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};

use crate::world::{AUDIENCE_LABEL, CAMPAIGN, FLEET, NEWS, ROLLOUT, TARGET_VERSION, World};

/// How long the run may take to converge once the chaos stopped.
pub const CONVERGE: Duration = Duration::from_secs(90);

/// The figures of a run, in the order they were recorded.
#[derive(Default)]
pub struct Figures {
    rows: Vec<(String, String)>,
}

impl Figures {
    /// Records `value` under `name`.
    pub fn record(&mut self, name: impl Into<String>, value: impl fmt::Display) {
        self.rows.push((name.into(), value.to_string()));
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        writeln!(f, "| {:width$} | value |", "figure")?;
        writeln!(f, "|{}|-------|", "-".repeat(width + 2))?;
        for (name, value) in &self.rows {
            writeln!(f, "| {name:width$} | {value} |")?;
        }
        Ok(())
    }
}

/// One tenant object: who its controller owner is, and where it lives.
struct Child {
    kind: &'static str,
    namespace: String,
    subscription_label: Option<String>,
    owner_uid: Option<String>,
}

fn child(kind: &'static str, meta: &ObjectMeta, namespace: String) -> Child {
    let owner_uid = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "Subscription")
        .map(|o| o.uid.clone());
    Child {
        kind,
        namespace,
        subscription_label: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::SUBSCRIPTION).cloned()),
        owner_uid,
    }
}

async fn children<K>(world: &World, kind: &'static str) -> anyhow::Result<Vec<Child>>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(world.client.clone());
    let list = api
        .list(&ListParams::default().labels(labels::SUBSCRIPTION))
        .await
        .with_context(|| format!("listing {kind}"))?;
    Ok(list
        .items
        .iter()
        .map(|o| {
            let namespace = o.namespace().unwrap_or_else(|| o.name_any());
            child(kind, o.meta(), namespace)
        })
        .collect())
}

impl World {
    /// Waits until every object reached the phase it reaches without faults, then asserts
    /// every invariant and records it in `figures`. `chaos_ended` is when the last kill or
    /// fault happened.
    pub async fn check(
        &mut self,
        figures: &mut Figures,
        chaos_ended: Instant,
    ) -> anyhow::Result<()> {
        let workload = self.workload.clone();
        let mut live: Vec<String> = workload.tenant_names();
        live.extend(workload.late_tenant_names());
        live.extend(workload.reader_names());
        let doomed = workload.doomed_names();
        let audience = workload.tenants + workload.readers;

        // Convergence: what a run without faults ends with.
        let subscriptions = self.subscriptions();
        let rollouts: Api<FirmwareRollout> = Api::namespaced(self.client.clone(), FLEET);
        let campaigns: Api<Campaign> = Api::namespaced(self.client.clone(), NEWS);
        let plans: Api<Plan> = Api::all(self.client.clone());
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let converged = wait_for("every object to converge", CONVERGE, || async {
            let subs = subscriptions.list(&ListParams::default()).await.ok()?;
            let active = subs.items.iter().filter(|s| {
                let status = s.status.as_ref();
                status.and_then(|s| s.phase) == Some(SubscriptionPhase::Active)
                    && status
                        .and_then(|s| find_condition(&s.conditions, types::READY))
                        .is_some_and(|c| c.status == "True")
            });
            let active: BTreeSet<String> = active.map(|s| s.name_any()).collect();
            let all: BTreeSet<String> = subs.items.iter().map(|s| s.name_any()).collect();
            let rollout = rollouts.get_opt(ROLLOUT).await.ok()??.status?.phase;
            let campaign = campaigns.get_opt(CAMPAIGN).await.ok()??.status?.phase;
            let plans_done = plans
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .all(|p| p.status.as_ref().and_then(|s| s.phase) == Some(PlanPhase::Ready));
            let leftover = namespaces
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .any(|n| {
                    doomed
                        .iter()
                        .any(|d| n.name_any().starts_with(&format!("{d}-")))
                });
            (live.iter().all(|n| active.contains(n))
                && doomed.iter().all(|d| !all.contains(d))
                && !leftover
                && plans_done
                && rollout == Some(FirmwareRolloutPhase::Succeeded)
                && campaign == Some(CampaignPhase::Completed))
            .then_some(())
        })
        .await;
        if let Err(error) = converged {
            bail!("{error}\n{}", self.describe_state().await);
        }
        figures.record(
            "converged after the chaos stopped",
            format!("{:.1?}", chaos_ended.elapsed()),
        );

        // Plans: Ready, counting exactly the Subscriptions on them.
        let plans = plans.list(&ListParams::default()).await?.items;
        for plan in &plans {
            let expected = match plan.name_any().as_str() {
                "chaos-tenant" => workload.tenants + workload.late_tenants,
                "chaos-mail" => workload.readers,
                other => bail!("unexpected Plan {other}"),
            };
            let status = plan.status.clone().unwrap_or_default();
            ensure!(
                status.subscriptions as usize == expected,
                "Plan {} counts {} Subscriptions, {expected} use it",
                plan.name_any(),
                status.subscriptions
            );
        }
        figures.record("plans Ready, counts exact", format!("{}/2", plans.len()));

        // Subscriptions, and their tenant objects: each exactly once, owned by the right UID;
        // nothing left of a deleted Subscription.
        let subs = subscriptions.list(&ListParams::default()).await?.items;
        ensure!(
            subs.len() == live.len(),
            "{} Subscriptions, expected {}",
            subs.len(),
            live.len()
        );
        figures.record(
            "subscriptions Active",
            format!("{}/{}", subs.len(), live.len()),
        );
        let mut all = Vec::new();
        all.extend(children::<Namespace>(self, "Namespace").await?);
        all.extend(children::<ResourceQuota>(self, "ResourceQuota").await?);
        all.extend(children::<LimitRange>(self, "LimitRange").await?);
        all.extend(children::<RoleBinding>(self, "RoleBinding").await?);
        all.extend(children::<NetworkPolicy>(self, "NetworkPolicy").await?);
        all.extend(children::<ConfigMap>(self, "ConfigMap").await?);
        let uids: BTreeMap<String, String> = subs
            .iter()
            .map(|s| (s.name_any(), s.uid().unwrap_or_default()))
            .collect();
        let orphans: Vec<String> = all
            .iter()
            .filter(|c| {
                let label = c.subscription_label.as_deref().unwrap_or_default();
                uids.get(label)
                    .is_none_or(|uid| c.owner_uid.as_deref() != Some(uid))
            })
            .map(|c| format!("{} in {} ({:?})", c.kind, c.namespace, c.subscription_label))
            .collect();
        ensure!(
            orphans.is_empty(),
            "tenant objects without their live owner: {orphans:?}"
        );
        let mut found: BTreeMap<(String, &str), Vec<String>> = BTreeMap::new();
        for c in &all {
            found
                .entry((c.subscription_label.clone().unwrap_or_default(), c.kind))
                .or_default()
                .push(c.namespace.clone());
        }
        let mut expected_total = 0;
        for sub in &subs {
            let name = sub.name_any();
            let mut wanted = sub.desired_namespaces();
            wanted.sort();
            let tenant = sub.spec.plan == "chaos-tenant";
            for kind in [
                "Namespace",
                "ResourceQuota",
                "LimitRange",
                "RoleBinding",
                "NetworkPolicy",
                "ConfigMap",
            ] {
                let expected =
                    if tenant || matches!(kind, "Namespace" | "RoleBinding" | "ConfigMap") {
                        wanted.clone()
                    } else {
                        vec![]
                    };
                let mut got = found
                    .get(&(name.clone(), kind))
                    .cloned()
                    .unwrap_or_default();
                got.sort();
                ensure!(
                    got == expected,
                    "Subscription {name}: {kind} in {got:?}, expected once in each of {expected:?}"
                );
                expected_total += expected.len();
            }
        }
        ensure!(
            all.len() == expected_total,
            "{} tenant objects, expected {expected_total}",
            all.len()
        );
        figures.record(
            "tenant objects exactly once, owned by the right UID",
            format!("{}/{expected_total} (orphans 0, duplicates 0)", all.len()),
        );
        figures.record(
            "deleted during the run, nothing left",
            format!("{}/{}", doomed.len(), doomed.len()),
        );

        self.check_rollout(figures).await?;
        self.check_campaign(figures, audience).await?;

        // Nobody was refused a request config/rbac should grant.
        let refused: Vec<String> = [rbac::operator_user(), rbac::gateway_user()]
            .iter()
            .flat_map(|user| rbac::denied_for(&self.sandbox, user))
            .collect();
        ensure!(
            refused.is_empty(),
            "the sandbox refused requests: {refused:#?}"
        );
        figures.record("requests refused by RBAC", 0);
        Ok(())
    }

    async fn check_rollout(&mut self, figures: &mut Figures) -> anyhow::Result<()> {
        let devices_wanted = self.workload.devices;
        let rollout = Api::<FirmwareRollout>::namespaced(self.client.clone(), FLEET)
            .get(ROLLOUT)
            .await?;
        let counts = rollout.status.and_then(|s| s.counts).unwrap_or_default();
        let n = devices_wanted as i32;
        ensure!(
            (
                counts.targeted,
                counts.succeeded,
                counts.failed,
                counts.updating,
                counts.pending
            ) == (n, n, 0, 0, 0),
            "rollout counts {counts:?}"
        );
        // Assignments: the operator's successful writes of each Device, from the request log
        // (across every operator process).
        let operator = rbac::operator_user();
        let mut writes: BTreeMap<String, usize> = BTreeMap::new();
        for record in self.sandbox.requests().snapshot() {
            if record.verb == Verb::Patch
                && record.full_resource() == "devices"
                && record.status < 300
                && record.user.as_deref() == Some(operator.as_str())
            {
                *writes.entry(record.name.unwrap_or_default()).or_default() += 1;
            }
        }
        let twice: Vec<_> = writes.iter().filter(|(_, n)| **n != 1).collect();
        ensure!(
            twice.is_empty(),
            "Devices written more than once: {twice:?}"
        );
        ensure!(
            writes.len() == devices_wanted,
            "{} Devices assigned",
            writes.len()
        );
        // What the devices reported: one action id per device for the new version.
        let devices = Api::<Device>::namespaced(self.client.clone(), FLEET)
            .list(&ListParams::default())
            .await?
            .items;
        let mut distinct_ids = 0;
        for device in &devices {
            let name = device.name_any();
            let firmware = device.spec.firmware.as_ref().context("assigned")?;
            let status = device.status.as_ref().context("reported")?;
            let ids: BTreeSet<i64> = status
                .history
                .iter()
                .filter(|h| h.version == TARGET_VERSION)
                .filter_map(|h| h.action_id)
                .collect();
            ensure!(
                ids.len() == 1 && ids.contains(&firmware.action_id),
                "{name} reported actions {ids:?} for {TARGET_VERSION}, assigned {}",
                firmware.action_id
            );
            ensure!(
                firmware.attempt == Some(1)
                    && status.current_version.as_deref() == Some(TARGET_VERSION),
                "{name}: attempt {:?}, running {:?}",
                firmware.attempt,
                status.current_version
            );
            distinct_ids += ids.len();
        }
        figures.record(
            "rollout Succeeded, devices updated",
            format!("{}/{devices_wanted}", counts.succeeded),
        );
        figures.record(
            "devices assigned exactly once (writes, reported action ids)",
            format!("{}/{devices_wanted}, {distinct_ids} ids", writes.len()),
        );
        let max = self.workload.max_in_flight;
        let (most, samples) = self.sampler.take().context("sampler")?.finish().await;
        ensure!(samples > 20, "sampled the fleet only {samples} times");
        ensure!(most >= 1, "the sampler never saw a device in flight");
        ensure!(
            most <= max,
            "{most} devices in flight at once, maxInFlight {max}"
        );
        figures.record(
            "most in flight (maxInFlight)",
            format!("{most} ({max}), {samples} samples"),
        );
        Ok(())
    }

    async fn check_campaign(&self, figures: &mut Figures, audience: usize) -> anyhow::Result<()> {
        let campaign = Api::<Campaign>::namespaced(self.client.clone(), NEWS)
            .get(CAMPAIGN)
            .await?;
        let status = campaign.status.context("campaign status")?;
        let counts = status.counts.clone().unwrap_or_default();
        let audience_size = status.audience_size.unwrap_or_default();
        // The audience as the harness sees it: Subscriptions with the label.
        let listed = self
            .subscriptions()
            .list(&ListParams::default().labels(&format!("{AUDIENCE_LABEL}=yes")))
            .await?
            .items;
        let opted: BTreeSet<String> = listed
            .iter()
            .filter(|s| s.spec.contact.as_ref().is_some_and(|c| c.opted_out))
            .filter_map(|s| s.spec.contact.as_ref()?.email.clone())
            .collect();
        let emails: BTreeSet<String> = listed
            .iter()
            .filter_map(|s| s.spec.contact.as_ref()?.email.clone())
            .collect();
        ensure!(listed.len() == audience, "{} in the audience", listed.len());
        ensure!(
            audience_size == audience as i64,
            "status.audienceSize {audience_size}, {audience} match"
        );
        ensure!(
            counts.failed == 0 && counts.pending == 0,
            "campaign counts {counts:?}"
        );
        ensure!(
            counts.sent == audience_size - counts.held_out - counts.opted_out
                && counts.targeted == audience_size - counts.held_out,
            "campaign counts {counts:?} for an audience of {audience_size}"
        );
        ensure!(counts.opted_out as usize <= opted.len(), "{counts:?}");
        // What the receiver got: one distinct message id per recipient, each id to one
        // recipient, nobody outside the audience or opted out, everyone sent to.
        let deliveries = self.deliveries();
        let mut ids_by_recipient: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut recipients_by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for d in &deliveries {
            ensure!(!d.key.is_empty(), "a delivery without an Idempotency-Key");
            ids_by_recipient
                .entry(d.email.clone())
                .or_default()
                .insert(d.key.clone());
            recipients_by_id
                .entry(d.key.clone())
                .or_default()
                .insert(d.email.clone());
        }
        let duplicated: Vec<_> = ids_by_recipient
            .iter()
            .filter(|(_, ids)| ids.len() != 1)
            .collect();
        ensure!(
            duplicated.is_empty(),
            "recipients with several message ids: {duplicated:?}"
        );
        let shared: Vec<_> = recipients_by_id
            .iter()
            .filter(|(_, r)| r.len() != 1)
            .collect();
        ensure!(
            shared.is_empty(),
            "message ids sent to several recipients: {shared:?}"
        );
        let strangers: Vec<_> = ids_by_recipient
            .keys()
            .filter(|e| !emails.contains(*e))
            .collect();
        ensure!(
            strangers.is_empty(),
            "sent outside the audience: {strangers:?}"
        );
        let to_opted: Vec<_> = ids_by_recipient
            .keys()
            .filter(|e| opted.contains(*e))
            .collect();
        ensure!(
            to_opted.is_empty(),
            "sent to opted-out recipients: {to_opted:?}"
        );
        ensure!(
            ids_by_recipient.len() as i64 == counts.sent,
            "{} recipients received a message, status says {} sent",
            ids_by_recipient.len(),
            counts.sent
        );
        let sent_by_variant: i64 = status.variants.iter().map(|v| v.sent).sum();
        ensure!(
            sent_by_variant == counts.sent,
            "variants sent {sent_by_variant}, {counts:?}"
        );
        figures.record(
            "campaign Completed: audience, heldOut, optedOut, sent, failed, pending",
            format!(
                "{audience_size}, {}, {}, {}, {}, {}",
                counts.held_out, counts.opted_out, counts.sent, counts.failed, counts.pending
            ),
        );
        figures.record(
            "recipients with exactly one message id (deliveries incl. re-sends)",
            format!(
                "{}/{} ({})",
                ids_by_recipient.len(),
                counts.sent,
                deliveries.len()
            ),
        );
        Ok(())
    }

    /// What did not converge, for the failure message.
    async fn describe_state(&self) -> String {
        let mut text = String::new();
        if let Ok(subs) = self.subscriptions().list(&ListParams::default()).await {
            for s in subs.items {
                let phase = s.status.as_ref().and_then(|s| s.phase);
                if phase != Some(SubscriptionPhase::Active) {
                    text.push_str(&format!("Subscription {}: {phase:?}\n", s.name_any()));
                }
            }
        }
        if let Ok(r) = Api::<FirmwareRollout>::namespaced(self.client.clone(), FLEET)
            .get(ROLLOUT)
            .await
        {
            text.push_str(&format!(
                "rollout: {:?}\n",
                r.status.map(|s| (s.phase, s.counts))
            ));
        }
        if let Ok(c) = Api::<Campaign>::namespaced(self.client.clone(), NEWS)
            .get(CAMPAIGN)
            .await
        {
            text.push_str(&format!(
                "campaign: {:?}\n",
                c.status.map(|s| (s.phase, s.counts))
            ));
        }
        text
    }
}
