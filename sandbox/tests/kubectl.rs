//! Conformance with the real `kubectl`: discovery, `get` with server-side Table output and
//! printer columns, the `flotilla` category, `apply`, `describe` and `delete`.
//!
//! kubectl is on the project's machines and `.ci/run` installs it; where it is missing the
//! tests say so and pass, unless `FLOTILLA_REQUIRE_KUBECTL=1` (set by CI) makes that a failure.

mod common;

use std::process::Command;

use common::*;
use flotilla_sandbox::Sandbox;

struct Kubectl {
    kubeconfig: tempfile::NamedTempFile,
}

impl Kubectl {
    fn available() -> bool {
        let found = Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
            .is_ok();
        if !found {
            assert!(
                std::env::var("FLOTILLA_REQUIRE_KUBECTL").is_err(),
                "kubectl is required (FLOTILLA_REQUIRE_KUBECTL is set) but not on PATH"
            );
            eprintln!("kubectl not found on PATH: skipping the kubectl conformance test");
        }
        found
    }

    fn new(sb: &Sandbox) -> Self {
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        sb.write_kubeconfig(kubeconfig.path()).unwrap();
        Self { kubeconfig }
    }

    /// Runs kubectl off the async runtime (the sandbox serves on it) and returns stdout,
    /// panicking with stderr on failure.
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.try_run(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed:\n{err}\n{out}");
        out
    }

    async fn try_run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let path = self.kubeconfig.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            // A fresh discovery cache per call: kubectl caches discovery per host:port for
            // hours, which would hide CRDs installed during a test.
            let cache = tempfile::tempdir().unwrap();
            let mut child = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&path)
                .arg("--cache-dir")
                .arg(cache.path())
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            if let Some(input) = stdin {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    }
}

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
    let kubectl = Kubectl::new(&sb);

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

    let (ok, _, err) = kubectl
        .try_run(
            &["apply", "-f", "-"],
            Some(&WIDGET_YAML.replace("size: 7", "size: 0")),
        )
        .await;
    assert!(!ok && err.contains("spec.size"), "{err}");

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
    let kubectl = Kubectl::new(&sb);
    let (ok, out, err) = kubectl.try_run(&["get", "flotilla", "-A"], None).await;
    assert!(ok, "{err}");
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
    let kubectl = Kubectl::new(&sb);
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
