//! Bad objects are rejected by the CRD schemas (OpenAPI validation and CEL rules) before any
//! controller sees them; good ones are admitted. Each case names the error the user would see.

mod support;

use flotilla_crds::{
    Campaign, Channel, Device, FirmwareRelease, FirmwareRollout, Plan, Subscription,
};
use serde_json::{Value, json};
use support::{admit, assert_admitted, assert_rejected};

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// `value` with the field at `pointer` set to `replacement` (added when missing).
fn with(mut value: Value, pointer: &str, replacement: Value) -> Value {
    let (parent, field) = pointer.rsplit_once('/').expect("a JSON pointer");
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(field.to_owned(), replacement);
        }
        Some(Value::Array(items)) => items[field.parse::<usize>().expect("an index")] = replacement,
        _ => panic!("{parent} is not an object or array"),
    }
    value
}

fn without(mut value: Value, parent: &str, field: &str) -> Value {
    value
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect(parent)
        .remove(field);
    value
}

// ---------- Plan ----------

fn plan() -> Value {
    object(
        "Plan",
        "team",
        json!({
            "displayName": "Team",
            "quota": {"hard": {"requests.cpu": "4", "limits.memory": "8Gi", "pods": 20, "count/services.loadbalancers": 1}},
            "limitRange": {"default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "2"}},
            "features": {"sso": true, "audit-log": false},
            "trialDays": 14,
            "gracePeriodDays": 7,
            "networkIsolation": true,
            "price": {"amount": "49.00", "currency": "EUR", "interval": "Month"},
        }),
    )
}

#[test]
fn plan_admission() {
    assert_admitted::<Plan>(&plan(), None);
    assert_admitted::<Plan>(
        &object("Plan", "free", json!({"displayName": "Free"})),
        None,
    );
    assert_rejected::<Plan>(
        &without(plan(), "/spec", "displayName"),
        None,
        "spec.displayName: Required value",
    );
    assert_rejected::<Plan>(
        &with(plan(), "/spec/trialDays", json!(-1)),
        None,
        "spec.trialDays: should be greater than or equal to 0",
    );
    assert_rejected::<Plan>(
        &with(plan(), "/spec/gracePeriodDays", json!(-3)),
        None,
        "spec.gracePeriodDays",
    );
    assert_rejected::<Plan>(
        &with(plan(), "/spec/quota/hard/pods", json!(-1)),
        None,
        "spec.quota.hard.pods",
    );
    assert_rejected::<Plan>(
        &with(plan(), "/spec/quota/hard/pods", json!("-1")),
        None,
        "spec.quota.hard.pods: should match",
    );
    assert_rejected::<Plan>(
        &with(plan(), "/spec/quota/hard/requests.cpu", json!("four")),
        None,
        "should match",
    );
    assert_rejected::<Plan>(
        &with(plan(), "/spec/price/currency", json!("euro")),
        None,
        "spec.price.currency",
    );
    assert_rejected::<Plan>(
        &with(plan(), "/spec/price/interval", json!("Weekly")),
        None,
        "Unsupported value",
    );
}

// ---------- Subscription ----------

fn subscription() -> Value {
    object(
        "Subscription",
        "acme",
        json!({
            "plan": "team",
            "owners": [{"kind": "User", "name": "ada@acme.example"}, {"kind": "Group", "name": "acme-admins"}],
            "contact": {"name": "Ada", "email": "ada@acme.example", "timeZone": "Europe/London"},
            "namespaces": ["acme-prod", "acme-dev"],
            "state": "Active",
            "payment": {"state": "Current"},
            "trial": true,
            "deletionPolicy": "Delete",
        }),
    )
}

#[test]
fn subscription_admission() {
    assert_admitted::<Subscription>(&subscription(), None);
    assert_rejected::<Subscription>(
        &without(subscription(), "/spec", "plan"),
        None,
        "spec.plan: Required value",
    );
    assert_rejected::<Subscription>(
        &with(subscription(), "/spec/namespaces", json!(["acme", "acme"])),
        None,
        "Duplicate value",
    );
    assert_rejected::<Subscription>(
        &with(subscription(), "/spec/namespaces", json!(["Acme_Prod"])),
        None,
        "spec.namespaces[0]: should match",
    );
    assert_rejected::<Subscription>(
        &with(
            subscription(),
            "/spec/owners",
            json!([{"kind": "User", "name": "ada"}, {"kind": "User", "name": "ada"}]),
        ),
        None,
        "Duplicate value",
    );
    assert_rejected::<Subscription>(
        &with(subscription(), "/spec/state", json!("Paused")),
        None,
        "Unsupported value",
    );
    assert_rejected::<Subscription>(
        &with(subscription(), "/spec/payment", json!({"state": "PastDue"})),
        None,
        "payment.since is required when payment.state is PastDue",
    );
    assert_admitted::<Subscription>(
        &with(
            subscription(),
            "/spec/payment",
            json!({"state": "PastDue", "since": "2030-01-01T00:00:00Z"}),
        ),
        None,
    );
}

#[test]
fn a_subscription_without_namespaces_needs_a_namespace_name() {
    let dotted = with(
        without(subscription(), "/spec", "namespaces"),
        "/metadata/name",
        json!("acme.example.com"),
    );
    assert_rejected::<Subscription>(
        &dotted,
        None,
        "metadata.name must be a valid namespace name",
    );
    let plain = without(subscription(), "/spec", "namespaces");
    assert_admitted::<Subscription>(&plain, None);
    let long = with(plain, "/metadata/name", json!("a".repeat(64)));
    assert_rejected::<Subscription>(&long, None, "longer than 63 characters");
}

#[test]
fn a_cancelled_subscription_stays_cancelled() {
    let cancelled = with(subscription(), "/spec/state", json!("Cancelled"));
    let reactivated = with(subscription(), "/spec/state", json!("Active"));
    assert_rejected::<Subscription>(&reactivated, Some(&cancelled), "cannot be reactivated");
    assert_admitted::<Subscription>(&cancelled, Some(&subscription()));
    let suspended = with(subscription(), "/spec/state", json!("Suspended"));
    assert_admitted::<Subscription>(&reactivated, Some(&suspended));
}

// ---------- Channel ----------

fn webhook_channel() -> Value {
    object(
        "Channel",
        "webhook",
        json!({
            "type": "Webhook",
            "webhook": {"url": "https://hooks.acme.example/flotilla", "signingSecretRef": {"name": "webhook", "key": "hmac"}},
            "timeout": "5s",
            "rateLimit": {"messagesPerMinute": 600},
        }),
    )
}

#[test]
fn channel_admission() {
    assert_admitted::<Channel>(&webhook_channel(), None);
    assert_admitted::<Channel>(&object("Channel", "log", json!({"type": "Log"})), None);
    assert_admitted::<Channel>(
        &object(
            "Channel",
            "mail",
            json!({"type": "SMTP", "smtp": {"host": "smtp.acme.example", "port": 465, "security": "TLS", "from": "noreply@acme.example", "credentialsSecretRef": {"name": "smtp"}}}),
        ),
        None,
    );
    let private_ca = |security: &str| {
        object(
            "Channel",
            "relay",
            json!({"type": "SMTP", "smtp": {"host": "smtp.internal", "security": security, "from": "noreply@acme.example", "tlsCaSecretRef": {"name": "relay", "key": "ca.crt"}}}),
        )
    };
    assert_admitted::<Channel>(&private_ca("StartTLS"), None);
    assert_rejected::<Channel>(
        &private_ca("None"),
        None,
        "spec.smtp.tlsCaSecretRef needs security StartTLS or TLS",
    );
    assert_rejected::<Channel>(
        &object("Channel", "slack", json!({"type": "Slack"})),
        None,
        "spec.slack is required with type Slack",
    );
    assert_rejected::<Channel>(
        &with(webhook_channel(), "/spec/type", json!("Log")),
        None,
        "spec.webhook is required with type Webhook and not allowed otherwise",
    );
    assert_rejected::<Channel>(
        &with(
            webhook_channel(),
            "/spec/webhook/url",
            json!("ftp://files.acme.example/x"),
        ),
        None,
        "must be an absolute http or https URL",
    );
    assert_rejected::<Channel>(
        &with(webhook_channel(), "/spec/timeout", json!("five seconds")),
        None,
        "spec.timeout: should match",
    );
    assert_rejected::<Channel>(
        &with(
            webhook_channel(),
            "/spec/rateLimit/messagesPerMinute",
            json!(0),
        ),
        None,
        "spec.rateLimit.messagesPerMinute",
    );
    assert_rejected::<Channel>(
        &with(webhook_channel(), "/spec/type", json!("webhook")),
        None,
        "Unsupported value",
    );
}

// ---------- Campaign ----------

fn campaign() -> Value {
    object(
        "Campaign",
        "trial-ending",
        json!({
            "audience": {"plans": ["team"], "phases": ["Trialing"], "holdoutPercent": 10},
            "channels": {"mode": "Fallback", "names": ["webhook", "mail"]},
            "message": {"subject": "Your trial ends soon", "body": "Hello {{ subscription.name }}"},
            "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "subject": "Only a few days left"}],
            "schedule": {"startAt": "2030-01-01T09:00:00Z", "localTime": true},
            "throttle": {"messagesPerMinute": 6000, "maxInFlight": 50},
            "quietHours": {"start": "21:00", "end": "08:00", "defaultTimeZone": "Europe/Berlin"},
            "failureThreshold": {"percent": 20},
        }),
    )
}

#[test]
fn campaign_admission() {
    assert_admitted::<Campaign>(&campaign(), None);
    let trigger = json!({"phaseEntered": "PastDue"});
    assert_rejected::<Campaign>(
        &with(campaign(), "/spec/trigger", trigger.clone()),
        None,
        "mutually exclusive",
    );
    assert_admitted::<Campaign>(
        &with(
            without(campaign(), "/spec", "schedule"),
            "/spec/trigger",
            trigger,
        ),
        None,
    );
    assert_rejected::<Campaign>(
        &with(
            without(campaign(), "/spec", "schedule"),
            "/spec/trigger",
            json!({"phaseEntered": "PastDue", "daysBeforeTrialEnd": 3}),
        ),
        None,
        "set exactly one of phaseEntered and daysBeforeTrialEnd",
    );
    assert_rejected::<Campaign>(
        &with(campaign(), "/spec/audience/holdoutPercent", json!(101)),
        None,
        "spec.audience.holdoutPercent",
    );
    assert_rejected::<Campaign>(
        &with(campaign(), "/spec/audience/holdoutPercent", json!(-1)),
        None,
        "spec.audience.holdoutPercent",
    );
    assert_rejected::<Campaign>(
        &with(
            campaign(),
            "/spec/variants",
            json!([{"name": "a", "weight": 0}, {"name": "b", "weight": 0, "body": "x"}]),
        ),
        None,
        "variant weights must not all be zero",
    );
    assert_rejected::<Campaign>(
        &with(campaign(), "/spec/quietHours/end", json!("21:00")),
        None,
        "must not start and end at the same time",
    );
    assert_rejected::<Campaign>(
        &with(campaign(), "/spec/quietHours/end", json!("25:00")),
        None,
        "spec.quietHours.end: should match",
    );
    assert_rejected::<Campaign>(
        &with(campaign(), "/spec/channels/names", json!([])),
        None,
        "spec.channels.names: should have at least 1 items",
    );
}

#[test]
fn a_cancelled_campaign_stays_cancelled() {
    let cancelled = with(campaign(), "/spec/cancel", json!(true));
    assert_rejected::<Campaign>(
        &campaign(),
        Some(&cancelled),
        "a cancelled campaign cannot be resumed",
    );
    assert_admitted::<Campaign>(&cancelled, Some(&campaign()));
}

// ---------- FirmwareRelease ----------

fn release() -> Value {
    let mut value = object(
        "FirmwareRelease",
        "sensor-2-4-1",
        json!({
            "version": "2.4.1",
            "artifact": {
                "url": "https://firmware.acme.example/sensor/2.4.1.bin",
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "sizeBytes": 8388608,
            },
            "compatibleModels": ["sensor-v2"],
            "minimumFromVersion": "2.0.0",
        }),
    );
    value["metadata"]["namespace"] = json!("fleet");
    value
}

#[test]
fn firmware_release_admission() {
    assert_admitted::<FirmwareRelease>(&release(), None);
    assert_rejected::<FirmwareRelease>(
        &with(release(), "/spec/version", json!("v2.4")),
        None,
        "spec.version: should match",
    );
    assert_rejected::<FirmwareRelease>(
        &with(release(), "/spec/artifact/sha256", json!("9F86D081")),
        None,
        "spec.artifact.sha256",
    );
    assert_rejected::<FirmwareRelease>(
        &with(release(), "/spec/artifact/sizeBytes", json!(0)),
        None,
        "spec.artifact.sizeBytes",
    );
    assert_rejected::<FirmwareRelease>(
        &with(release(), "/spec/compatibleModels", json!([])),
        None,
        "spec.compatibleModels",
    );
    assert_rejected::<FirmwareRelease>(
        &with(
            release(),
            "/spec/artifact/url",
            json!("file:///firmware.bin"),
        ),
        None,
        "must be an absolute http or https URL",
    );
}

#[test]
fn a_release_version_and_artifact_are_immutable() {
    assert_rejected::<FirmwareRelease>(
        &with(release(), "/spec/version", json!("2.4.2")),
        Some(&release()),
        "version is immutable",
    );
    assert_rejected::<FirmwareRelease>(
        &with(release(), "/spec/artifact/sizeBytes", json!(1)),
        Some(&release()),
        "artifact is immutable",
    );
    assert_admitted::<FirmwareRelease>(
        &with(release(), "/spec/notes", json!("fixes")),
        Some(&release()),
    );
}

// ---------- Device ----------

#[test]
fn device_admission() {
    let device = object(
        "Device",
        "sensor-0001",
        json!({"model": "sensor-v2", "firmware": {"version": "2.4.1", "release": "sensor-2-4-1", "actionId": 1}}),
    );
    assert_admitted::<Device>(&device, None);
    assert_rejected::<Device>(
        &without(device.clone(), "/spec", "model"),
        None,
        "spec.model: Required value",
    );
    assert_rejected::<Device>(
        &with(device.clone(), "/spec/firmware/version", json!("latest")),
        None,
        "spec.firmware.version: should match",
    );
    let mut reported = device;
    reported["status"] = json!({"update": {"state": "Rebooting"}});
    assert_rejected::<Device>(&reported, None, "Unsupported value");
}

// ---------- FirmwareRollout ----------

fn rollout() -> Value {
    object(
        "FirmwareRollout",
        "spring",
        json!({
            "release": "sensor-2-4-1",
            "selector": {"matchLabels": {"ring": "canary"}},
            "waves": [
                {"count": 5, "pause": {"untilResumed": true}},
                {"percent": 10, "pause": {"duration": "1h"}},
                {"percent": 50},
                {"percent": 100},
            ],
            "maxInFlight": 50,
            "failureThreshold": {"overall": {"percent": 5, "count": 100}, "perWave": {"percent": 10}, "perCohort": {"percent": 20}},
            "maintenanceWindow": {"days": ["Saturday", "Sunday"], "start": "22:00", "end": "04:00", "timeZone": "Europe/Berlin"},
            "onFailure": "Rollback",
            "approval": {"required": true},
        }),
    )
}

#[test]
fn rollout_admission() {
    assert_admitted::<FirmwareRollout>(&rollout(), None);
    assert_admitted::<FirmwareRollout>(
        &object(
            "FirmwareRollout",
            "defaults",
            json!({"release": "r", "selector": {"matchLabels": {"site": "berlin"}}}),
        ),
        None,
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/waves/3/percent", json!(90)),
        None,
        "the last wave must be percent: 100",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/waves/3", json!({"count": 1000})),
        None,
        "the last wave must be percent: 100",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/waves/1/count", json!(7)),
        None,
        "a wave sets exactly one of percent and count",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/waves/0", json!({"pause": {}})),
        None,
        "a wave sets exactly one of percent and count",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/waves/2/percent", json!(5)),
        None,
        "wave percentages must not decrease",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/waves/2/percent", json!(101)),
        None,
        "should be less than or equal to 100",
    );
    assert_rejected::<FirmwareRollout>(
        &with(
            rollout(),
            "/spec/waves/1/pause",
            json!({"duration": "1h", "untilResumed": true}),
        ),
        None,
        "a pause sets exactly one of duration and untilResumed",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/waves", json!([])),
        None,
        "spec.waves: should have at least 1 items",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/maxInFlight", json!(0)),
        None,
        "spec.maxInFlight",
    );
    assert_rejected::<FirmwareRollout>(
        &with(
            rollout(),
            "/spec/failureThreshold/overall/percent",
            json!(101),
        ),
        None,
        "spec.failureThreshold.overall.percent",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/failureThreshold/perWave", json!({})),
        None,
        "set percent, count, or both",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/selector", json!({})),
        None,
        "selector must not be empty",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/maintenanceWindow/end", json!("22:00")),
        None,
        "must not start and end at the same time",
    );
    assert_rejected::<FirmwareRollout>(
        &with(
            rollout(),
            "/spec/maintenanceWindow/timeZone",
            json!("Europe Berlin"),
        ),
        None,
        "spec.maintenanceWindow.timeZone",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/onFailure", json!("Retry")),
        None,
        "Unsupported value",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/deviceTimeout", json!("-5m")),
        None,
        "spec.deviceTimeout: should match",
    );
    assert_rejected::<FirmwareRollout>(
        &with(
            without(rollout(), "/spec", "approval"),
            "/spec/approvedPlanHash",
            json!("a".repeat(64)),
        ),
        None,
        "approvedPlanHash is only used when approval.required is true",
    );
    assert_rejected::<FirmwareRollout>(
        &with(rollout(), "/spec/approvedPlanHash", json!("abc")),
        None,
        "spec.approvedPlanHash",
    );
}

#[test]
fn an_aborted_rollout_stays_aborted() {
    let aborted = with(rollout(), "/spec/abort", json!(true));
    assert_rejected::<FirmwareRollout>(
        &rollout(),
        Some(&aborted),
        "an aborted rollout cannot be resumed",
    );
    assert_admitted::<FirmwareRollout>(&aborted, Some(&rollout()));
}

#[test]
fn defaults_are_applied_before_validation() {
    // A rollout without waves gets the default 1/10/50/100% waves, which satisfy every rule.
    let minimal = object(
        "FirmwareRollout",
        "minimal",
        json!({"release": "r", "selector": {"matchLabels": {"a": "b"}}}),
    );
    assert_eq!(admit::<FirmwareRollout>(&minimal, None), Ok(()));
}
