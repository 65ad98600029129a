//! Conformance with the real `kubectl`: discovery, `get` with server-side Table output and
//! printer columns, the `flotilla` category, `apply`, `describe` and `delete`.
//!
//! kubectl is on the project's machines and `.ci/run` installs it; where it is missing the
//! tests say so and pass, unless `FLOTILLA_REQUIRE_KUBECTL=1` (set by CI) makes that a failure.

mod common;

use common::*;
use flotilla_sandbox::Sandbox;
use flotilla_sandbox::kubectl::Kubectl;

const WIDGET_YAML: &str = r#"
apiVersion: test.flotilla.dev/v1
kind: Widget
metadata:
  name: sprocket
  namespace: default
  labels:
    ring: canary
spec:
  size: 7
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_describe_delete() {
    if !Kubectl::available() {
        return;
    }
    let sb = sandbox().await;
    let kubectl = Kubectl::admin(&sb).unwrap();

    let out = kubectl.run(&["get", "namespaces"], None).await;
    assert!(out.contains("default") && out.contains("Active"), "{out}");

    // Imperative create sends protobuf bodies.
    let out = kubectl.run(&["create", "namespace", "fleet"], None).await;
    assert!(out.contains("namespace/fleet created"), "{out}");
    let out = kubectl
        .run(
            &[
                "-n",
                "fleet",
                "create",
                "configmap",
                "settings",
                "--from-literal=mode=fast",
            ],
            None,
        )
        .await;
    assert!(out.contains("configmap/settings created"), "{out}");
    let out = kubectl
        .run(
            &[
                "-n",
                "fleet",
                "get",
                "configmap",
                "settings",
                "-o",
                "jsonpath={.data.mode}",
            ],
            None,
        )
        .await;
    assert_eq!(out, "fast");

    let out = kubectl.run(&["apply", "-f", "-"], Some(WIDGET_YAML)).await;
    assert!(
        out.contains("widget.test.flotilla.dev/sprocket created"),
        "{out}"
    );
    // Applying the same manifest again changes nothing.
    let out = kubectl.run(&["apply", "-f", "-"], Some(WIDGET_YAML)).await;
    assert!(out.contains("unchanged"), "{out}");

    let out = kubectl.run(&["get", "widgets"], None).await;
    let header = out.lines().next().unwrap();
    assert!(
        header.contains("NAME") && header.contains("SIZE") && header.contains("PHASE"),
        "{out}"
    );
    assert!(out.contains("sprocket") && out.contains('7'), "{out}");

    let out = kubectl
        .run(&["get", "wd", "-l", "ring=canary", "-o", "name"], None)
        .await;
    assert_eq!(out.trim(), "widget.test.flotilla.dev/sprocket");

    let out = kubectl.run(&["get", "flotilla", "-A"], None).await;
    assert!(out.contains("sprocket"), "{out}");

    let out = kubectl.run(&["describe", "widget", "sprocket"], None).await;
    assert!(
        out.contains("Name:") && out.contains("sprocket") && out.contains("Size"),
        "{out}"
    );

    let out = kubectl
        .try_run(
            &["apply", "-f", "-"],
            Some(&WIDGET_YAML.replace("size: 7", "size: 0")),
        )
        .await;
    assert!(!out.success && out.stderr.contains("spec.size"), "{out:?}");

    let out = kubectl.run(&["delete", "widget", "sprocket"], None).await;
    assert!(out.contains("deleted"), "{out}");
    let out = kubectl.run(&["get", "widgets", "-o", "name"], None).await;
    assert!(out.trim().is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_flotilla_lists_every_flotilla_kind() {
    if !Kubectl::available() {
        return;
    }
    let sb = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::admin(&sb).unwrap();
    let listed = kubectl.try_run(&["get", "flotilla", "-A"], None).await;
    let (out, err) = (listed.stdout, listed.stderr);
    assert!(listed.success, "{err}");
    assert!(out.is_empty() || out.contains("NAME"), "{out}");
    assert!(
        err.contains("No resources found") || !out.is_empty(),
        "{err}"
    );
    let out = kubectl
        .run(
            &["api-resources", "--categories", "flotilla", "-o", "name"],
            None,
        )
        .await;
    for plural in [
        "plans",
        "subscriptions",
        "channels",
        "campaigns",
        "firmwarereleases",
        "devices",
        "firmwarerollouts",
    ] {
        assert!(
            out.contains(&format!("{plural}.flotilla.dev")),
            "{plural} missing from:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_accepts_every_generated_crd() {
    if !Kubectl::available() {
        return;
    }
    let sb = Sandbox::start().await.unwrap();
    let kubectl = Kubectl::admin(&sb).unwrap();
    let yaml = flotilla_crds::crds_yaml();
    let out = kubectl
        .run(&["apply", "--dry-run=client", "-f", "-"], Some(&yaml))
        .await;
    assert_eq!(out.matches("(dry run)").count(), 7, "{out}");
    let out = kubectl
        .run(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml))
        .await;
    assert_eq!(out.matches("(server dry run)").count(), 7, "{out}");
    let out = kubectl.run(&["apply", "-f", "-"], Some(&yaml)).await;
    assert_eq!(out.matches(" created").count(), 7, "{out}");
    let out = kubectl
        .run(
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=10s",
            ],
            None,
        )
        .await;
    assert_eq!(out.matches("condition met").count(), 7, "{out}");
    let out = kubectl.run(&["get", "flotilla", "-A"], None).await;
    assert!(out.is_empty(), "{out}");
}
