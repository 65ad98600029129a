//! `kubectl flotilla campaign status NAME [-w]` and `campaign pause|resume NAME`.
//!
//! `status` renders the Campaign's status: the counts in total, per variant and per Channel,
//! the rate since the start and the time left at that rate, the failure reasons and the
//! conditions ([`render`] is pure). `pause` sets `spec.suspend`; `resume` clears it and sets a
//! new `spec.resume`, which also ends a failure-threshold pause — both merge patches on the
//! spec, as a reviewed GitOps commit would make them.

use std::io::Write;

use anyhow::Context as _;
use flotilla_crds::condition::find_condition;
use flotilla_crds::{Campaign, CampaignPhase};
use futures::StreamExt as _;
use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

use super::Outcome;
use super::control::{FIELD_MANAGER, resume_token};
use super::table::Table;

fn object_ref(name: &str) -> String {
    format!("campaign.{}/{name}", flotilla_crds::GROUP)
}

fn campaigns(client: &kube::Client, namespace: &str) -> Api<Campaign> {
    Api::namespaced(client.clone(), namespace)
}

async fn get(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<Campaign> {
    match campaigns(client, namespace).get_opt(name).await {
        Ok(Some(campaign)) => Ok(campaign),
        Ok(None) => anyhow::bail!(
            "campaigns.{} \"{name}\" not found in namespace {namespace:?}",
            flotilla_crds::GROUP
        ),
        Err(error) => Err(error).with_context(|| format!("reading {}", object_ref(name))),
    }
}

/// The status of `campaign` at `now`, as `campaign status` prints it.
pub fn render(campaign: &Campaign, now: Timestamp) -> String {
    let name = campaign.metadata.name.as_deref().unwrap_or_default();
    let status = campaign.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let mut out = format!("Campaign {name}: {}\n", phase.as_str());
    let counts = status.counts.clone().unwrap_or_default();
    if let Some(size) = status.audience_size {
        out.push_str(&format!(
            "Audience {size}: {} targeted, {} held out, {} opted out\n",
            counts.targeted, counts.held_out, counts.opted_out
        ));
    }
    if let Some(preview) = &status.preview {
        out.push_str(&format!(
            "Preview: {} recipients, {} held out, {} opted out{}\n",
            preview.audience_size,
            preview.held_out,
            preview.opted_out,
            preview
                .estimated_finish_at
                .as_ref()
                .map(|t| format!(", estimated finish {}", t.0))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "Sent {}  Failed {}  Pending {}\n",
        counts.sent, counts.failed, counts.pending
    ));
    if let Some(started) = &status.started_at {
        let end = status.completed_at.as_ref().map_or(now, |t| t.0);
        let seconds = end.duration_since(started.0).as_secs_f64();
        let finished = (counts.sent + counts.failed) as f64;
        if seconds > 0.0 && finished > 0.0 {
            let per_minute = finished / seconds * 60.0;
            out.push_str(&format!("Rate {per_minute:.0}/min since {}", started.0));
            if phase == CampaignPhase::Running && counts.pending > 0 {
                let left = counts.pending as f64 / (finished / seconds);
                out.push_str(&format!(", ETA {}", eta(left)));
            }
            out.push('\n');
        }
    }
    if let Some(next) = &status.next_send_at {
        out.push_str(&format!("Next send {}\n", next.0));
    }
    if !status.variants.is_empty() {
        let mut table = Table::new(["VARIANT", "TARGETED", "SENT", "FAILED", "PENDING"]);
        for v in &status.variants {
            table.row([
                v.name.clone(),
                v.targeted.to_string(),
                v.sent.to_string(),
                v.failed.to_string(),
                v.pending.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render(""));
    }
    if !status.channels.is_empty() {
        let mut table = Table::new(["CHANNEL", "SENT", "FAILED ATTEMPTS"]);
        for c in &status.channels {
            table.row([c.name.clone(), c.sent.to_string(), c.failed.to_string()]);
        }
        out.push('\n');
        out.push_str(&table.render(""));
    }
    if !status.failure_reasons.is_empty() {
        let mut table = Table::new(["FAILURE REASON", "COUNT"]);
        for r in &status.failure_reasons {
            table.row([r.reason.clone(), r.count.to_string()]);
        }
        out.push('\n');
        out.push_str(&table.render(""));
    }
    let mut table = Table::new(["CONDITION", "STATUS", "REASON", "MESSAGE"]);
    for type_ in [
        "Ready",
        "TemplatesValid",
        "ChannelsReady",
        "FailureThresholdExceeded",
    ] {
        if let Some(c) = find_condition(&status.conditions, type_) {
            table.row([
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]);
        }
    }
    out.push('\n');
    out.push_str(&table.render(""));
    out
}

fn eta(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds / 60 % 60),
    }
}

/// Whether a campaign's phase is an end.
fn finished(campaign: &Campaign) -> Option<Outcome> {
    match campaign.status.as_ref().and_then(|s| s.phase)? {
        CampaignPhase::Completed => Some(Outcome::Done),
        CampaignPhase::Failed | CampaignPhase::Cancelled => Some(Outcome::Unsuccessful),
        _ => None,
    }
}

/// `campaign status NAME [-w]`: prints the status; with `watch`, again on every change until
/// the campaign ends (exit 1 when it ends Failed or Cancelled).
pub async fn status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    watch: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let campaign = get(client, namespace, name).await?;
    write!(out, "{}", render(&campaign, Timestamp::now())).context("writing to stdout")?;
    if !watch {
        return Ok(Outcome::Done);
    }
    if let Some(outcome) = finished(&campaign) {
        return Ok(outcome);
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher(campaigns(client, namespace), config)
        .applied_objects()
        .boxed();
    loop {
        tokio::select! {
            next = changes.next() => match next {
                Some(Ok(campaign)) => {
                    write!(out, "\n{}", render(&campaign, Timestamp::now()))
                        .context("writing to stdout")?;
                    if let Some(outcome) = finished(&campaign) {
                        return Ok(outcome);
                    }
                }
                Some(Err(error)) => return Err(error).context("watching the campaign"),
                None => return Ok(Outcome::Done),
            },
            _ = tokio::signal::ctrl_c() => return Ok(Outcome::Interrupted),
        }
    }
}

async fn patch_spec(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    get(client, namespace, name).await?;
    campaigns(client, namespace)
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .with_context(|| format!("patching {}", object_ref(name)))?;
    Ok(())
}

/// `campaign pause NAME`: `spec.suspend=true`; what is in flight finishes.
pub async fn pause(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    patch_spec(client, namespace, name, json!({"suspend": true})).await?;
    writeln!(out, "{} paused", object_ref(name)).context("writing to stdout")
}

/// `campaign resume NAME`: `spec.suspend=false` and a new `spec.resume`, which also ends a
/// failure-threshold pause (the failures so far are accepted).
pub async fn resume(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let campaign = get(client, namespace, name).await?;
    let token = resume_token(
        Timestamp::now(),
        campaign.spec.resume.as_deref(),
        campaign
            .status
            .as_ref()
            .and_then(|s| s.resume_at_pause.as_deref()),
    );
    patch_spec(
        client,
        namespace,
        name,
        json!({"suspend": false, "resume": token}),
    )
    .await?;
    writeln!(out, "{} resumed", object_ref(name)).context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_campaign_shows_counts_rate_eta_and_breakdowns() {
        let campaign: Campaign = serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Campaign",
            "metadata": {"name": "launch", "namespace": "news"},
            "spec": {"audience": {}, "channels": {"names": ["hook"]}, "message": {"body": "hi"}},
            "status": {
                "phase": "Running",
                "audienceSize": 1000,
                "counts": {"targeted": 900, "heldOut": 100, "optedOut": 10, "sent": 580, "failed": 20, "pending": 290},
                "variants": [{"name": "a", "targeted": 450, "sent": 290, "failed": 10, "pending": 145}],
                "channels": [{"name": "hook", "sent": 580, "failed": 25}],
                "failureReasons": [{"reason": "HTTP400", "count": 20}],
                "startedAt": "2030-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Sending", "message": "sending",
                                "lastTransitionTime": "2030-01-01T00:00:00Z"}],
            },
        }))
        .unwrap();
        let text = render(&campaign, "2030-01-01T00:10:00Z".parse().unwrap());
        assert!(text.starts_with("Campaign launch: Running\n"), "{text}");
        assert!(text.contains("Audience 1000: 900 targeted, 100 held out, 10 opted out"));
        assert!(text.contains("Sent 580  Failed 20  Pending 290"));
        // 600 finished in 10 minutes: 60/min, 290 left → 4m50s.
        assert!(text.contains("Rate 60/min"), "{text}");
        assert!(text.contains("ETA 4m50s"), "{text}");
        assert!(
            text.contains("a        450       290   10      145"),
            "{text}"
        );
        assert!(text.contains("HTTP400"), "{text}");
        assert!(text.contains("Ready      True    Sending"), "{text}");
    }
}
