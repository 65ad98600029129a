//! What kube-controller-manager's resource quota controller does, reduced to what the sandbox
//! can know: `status.hard` mirrors `spec.hard`, and `status.used` counts the objects the sandbox
//! stores (`count/configmaps`, `secrets`, `count/deployments.apps`, ...). Compute resources
//! (`requests.cpu`, `limits.memory`, ...) are used by pods, which the sandbox does not run, so
//! they are `0` unless a test writes `status.used` itself.

use serde_json::{Map, Value, json};

/// The object count a quota key measures, as (group, plural), or None for compute and
/// storage resources.
pub fn counted_resource(key: &str) -> Option<(String, String)> {
    if let Some(rest) = key.strip_prefix("count/") {
        return Some(match rest.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), rest.to_string()),
        });
    }
    // The legacy object-count names of the core group.
    matches!(
        key,
        "pods"
            | "services"
            | "secrets"
            | "configmaps"
            | "persistentvolumeclaims"
            | "replicationcontrollers"
            | "resourcequotas"
    )
    .then(|| (String::new(), key.to_string()))
}

/// The status a quota controller would write, given how many objects of a resource the
/// namespace holds. Keeps previously written usage of keys the sandbox cannot measure.
pub fn status(quota: &Value, count: impl Fn(&str, &str) -> u64) -> Value {
    let hard = quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let previous = quota.pointer("/status/used").and_then(Value::as_object);
    let mut used = Map::new();
    for key in hard.keys() {
        let value = match counted_resource(key) {
            Some((group, plural)) => json!(count(&group, &plural).to_string()),
            None => previous
                .and_then(|p| p.get(key))
                .cloned()
                .unwrap_or_else(|| json!("0")),
        };
        used.insert(key.clone(), value);
    }
    json!({"hard": hard, "used": used})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_objects_and_keeps_unmeasurable_usage() {
        let quota = json!({
            "spec": {"hard": {"count/configmaps": "10", "secrets": "5", "requests.cpu": "4",
                              "count/deployments.apps": "3", "limits.memory": "8Gi"}},
            "status": {"used": {"requests.cpu": "1500m"}}
        });
        let s = status(&quota, |group, plural| match (group, plural) {
            ("", "configmaps") => 2,
            ("", "secrets") => 1,
            ("apps", "deployments") => 3,
            _ => 0,
        });
        assert_eq!(s["hard"], quota["spec"]["hard"]);
        assert_eq!(
            s["used"],
            json!({"count/configmaps": "2", "secrets": "1", "requests.cpu": "1500m",
                   "count/deployments.apps": "3", "limits.memory": "0"})
        );
    }

    #[test]
    fn classifies_quota_keys() {
        assert_eq!(
            counted_resource("count/deployments.apps"),
            Some(("apps".into(), "deployments".into()))
        );
        assert_eq!(
            counted_resource("configmaps"),
            Some((String::new(), "configmaps".into()))
        );
        assert_eq!(counted_resource("requests.storage"), None);
        assert_eq!(
            counted_resource("count/services.loadbalancers"),
            Some(("loadbalancers".into(), "services".into()))
        );
    }
}
