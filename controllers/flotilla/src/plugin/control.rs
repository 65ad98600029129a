//! `kubectl flotilla rollout pause|resume|abort|approve NAME`: each is one JSON merge patch on
//! the FirmwareRollout's spec (never its status), so that what the plugin does is exactly
//! what a reviewed GitOps commit would do. What each field means: `crds/src/firmware_rollout.rs`.

use std::io::{BufRead as _, Write};

use anyhow::Context as _;
use flotilla_crds::FirmwareRollout;
use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::object_ref;
use super::rollout_status::render_plan;

/// Field manager of the plugin's patches (shows in managedFields).
pub const FIELD_MANAGER: &str = "kubectl-flotilla";

/// Whether `approve` may go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// `--yes`: approve without asking.
    Given,
    /// Ask on the terminal (stdin and stderr).
    Ask,
    /// No terminal to ask on, and no `--yes`: refuse.
    Unavailable,
}

/// `spec.paused=true`: no new assignments; updates in flight finish.
pub async fn pause(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    patch_spec(client, namespace, name, json!({"paused": true})).await?;
    report(out, name, "paused")
}

/// `spec.paused=false` and a new `spec.resume`: lifts a manual pause and ends a wave pause
/// (`untilResumed`) or a failure-threshold pause, which end when `spec.resume` differs from
/// `status.resumeAtPause`.
pub async fn resume(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let api = rollouts(client, namespace);
    let rollout = get(&api, namespace, name).await?;
    let token = resume_token(
        Timestamp::now(),
        rollout.spec.resume.as_deref(),
        rollout
            .status
            .as_ref()
            .and_then(|s| s.resume_at_pause.as_deref()),
    );
    patch_spec(
        client,
        namespace,
        name,
        json!({"paused": false, "resume": token}),
    )
    .await?;
    report(out, name, "resumed")
}

/// `spec.abort=true`: stops the rollout for good; devices keep what they have.
pub async fn abort(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    patch_spec(client, namespace, name, json!({"abort": true})).await?;
    report(out, name, "aborted")
}

/// Prints `status.plan` and, once confirmed, sets `spec.approvedPlanHash` to its hash.
///
/// No precondition ties the patch to the plan that was printed: the controller assigns only
/// while the approved hash equals the current plan's, so approving a plan that changed in
/// between approves nothing.
///
/// # Errors
/// The rollout needs no approval, has no plan yet, is already approved, or confirmation was
/// refused or impossible.
pub async fn approve(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    confirmation: Confirmation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let api = rollouts(client, namespace);
    let rollout = get(&api, namespace, name).await?;
    if !rollout.spec.approval.as_ref().is_some_and(|a| a.required) {
        anyhow::bail!(
            "{} does not require approval (spec.approval.required is not true); nothing to approve",
            object_ref(name)
        );
    }
    let status = rollout.status.clone().unwrap_or_default();
    let Some(plan) = status.plan.filter(|p| !p.hash.is_empty()) else {
        let phase = status.phase.unwrap_or_default().as_str();
        anyhow::bail!(
            "{} has no plan yet (phase {phase}): the controller computes status.plan first; \
             try again when `kubectl flotilla rollout status {name}` shows it",
            object_ref(name)
        );
    };
    if rollout.spec.approved_plan_hash.as_deref() == Some(plan.hash.as_str()) {
        writeln!(
            out,
            "{} plan {} is already approved",
            object_ref(name),
            plan.hash
        )
        .context("writing to stdout")?;
        return Ok(());
    }
    write!(out, "{}", render_plan(&plan, Timestamp::now())).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    let approved = match confirmation {
        Confirmation::Given => true,
        Confirmation::Ask => ask(&format!(
            "Approve this plan for {} ({} devices)? [y/N] ",
            object_ref(name),
            plan.targeted
        ))?,
        Confirmation::Unavailable => anyhow::bail!(
            "not approving {}: stdin is not a terminal to confirm on; pass --yes to approve plan {}",
            object_ref(name),
            plan.hash
        ),
    };
    if !approved {
        anyhow::bail!("not approved");
    }
    patch_spec(
        client,
        namespace,
        name,
        json!({"approvedPlanHash": plan.hash}),
    )
    .await?;
    report(out, name, "approved")
}

/// A `spec.resume` value that differs from the current one and from the one the pause began
/// with: the time, with a counter if the clock has not moved on.
pub fn resume_token(now: Timestamp, current: Option<&str>, at_pause: Option<&str>) -> String {
    let base = now.to_string();
    let taken = |candidate: &str| Some(candidate) == current || Some(candidate) == at_pause;
    if !taken(&base) {
        return base;
    }
    (1..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken(candidate))
        .expect("an unused suffix")
}

fn rollouts(client: &kube::Client, namespace: &str) -> Api<FirmwareRollout> {
    Api::namespaced(client.clone(), namespace)
}

/// The rollout, with kubectl's message when it does not exist.
pub(crate) async fn get(
    api: &Api<FirmwareRollout>,
    namespace: &str,
    name: &str,
) -> anyhow::Result<FirmwareRollout> {
    match api.get_opt(name).await {
        Ok(Some(rollout)) => Ok(rollout),
        Ok(None) => anyhow::bail!(
            "firmwarerollouts.{} \"{name}\" not found in namespace {namespace:?}",
            flotilla_crds::GROUP
        ),
        Err(error) => Err(error).with_context(|| format!("reading {}", object_ref(name))),
    }
}

async fn patch_spec(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    let api = rollouts(client, namespace);
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
            "firmwarerollouts.{} \"{name}\" not found in namespace {namespace:?}",
            flotilla_crds::GROUP
        ),
        Err(error) => Err(error).with_context(|| format!("patching {}", object_ref(name))),
    }
}

fn report(out: &mut dyn Write, name: &str, done: &str) -> anyhow::Result<()> {
    writeln!(out, "{} {done}", object_ref(name)).context("writing to stdout")
}

/// Asks a yes/no question on stderr, reads the answer from stdin.
fn ask(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer from stdin")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_tokens_always_differ_from_the_current_ones() {
        let now: Timestamp = "2030-01-01T10:00:00Z".parse().unwrap();
        assert_eq!(resume_token(now, None, None), "2030-01-01T10:00:00Z");
        assert_eq!(
            resume_token(now, Some("2030-01-01T10:00:00Z"), None),
            "2030-01-01T10:00:00Z-1"
        );
        assert_eq!(
            resume_token(
                now,
                Some("2030-01-01T10:00:00Z-1"),
                Some("2030-01-01T10:00:00Z")
            ),
            "2030-01-01T10:00:00Z-2"
        );
    }
}
