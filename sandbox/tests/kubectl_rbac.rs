//! The real `kubectl` against a sandbox that enforces RBAC: `kubectl create token`,
//! `--token`, `auth can-i` (and `--list`), `auth whoami`, `--as` allowed and forbidden.
//!
//! Skipped where kubectl is missing, unless `FLOTILLA_REQUIRE_KUBECTL=1` (set by CI).

mod common;

use std::path::Path;

use common::*;
use flotilla_sandbox::Sandbox;
use flotilla_sandbox::kubectl::Kubectl;

fn kubectl_available() -> bool {
    Kubectl::available()
}

/// Runs kubectl with `kubeconfig`; (success, stdout, stderr).
async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let out = Kubectl::with_kubeconfig(kubeconfig)
        .try_run(args, stdin)
        .await;
    (out.success, out.stdout, out.stderr)
}

async fn ok(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let (success, out, err) = kubectl(kubeconfig, args, stdin).await;
    assert!(success, "kubectl {args:?} failed:\n{err}\n{out}");
    out
}

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: team
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: viewer
  namespace: team
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: widget-viewer
  namespace: team
rules:
- apiGroups: ["test.flotilla.dev"]
  resources: ["widgets"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: viewer
  namespace: team
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: widget-viewer
subjects:
- kind: ServiceAccount
  name: viewer
  namespace: team
---
apiVersion: test.flotilla.dev/v1
kind: Widget
metadata:
  name: sprocket
  namespace: team
spec:
  size: 7
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_tokens_can_i_and_impersonation() {
    if !kubectl_available() {
        return;
    }
    let sb = Sandbox::builder()
        .crds([widget_crd()])
        .enforce_rbac()
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    sb.write_kubeconfig(&admin).unwrap();
    // The admin applies the policy; it takes effect at once.
    ok(&admin, &["apply", "-f", "-"], Some(POLICY)).await;
    let out = ok(
        &admin,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    )
    .await;
    assert_eq!(out, "sandbox-admin");

    // kubectl create token, then kubectl --token.
    let token = ok(
        &admin,
        &["-n", "team", "create", "token", "viewer", "--duration=15m"],
        None,
    )
    .await;
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let out = ok(
        &admin,
        &["--token", token, "-n", "team", "get", "widgets"],
        None,
    )
    .await;
    assert!(out.contains("sprocket"), "{out}");
    let (success, _, err) = kubectl(
        &admin,
        &[
            "--token", token, "-n", "team", "delete", "widget", "sprocket",
        ],
        None,
    )
    .await;
    assert!(!success);
    assert!(
        err.contains("Error from server (Forbidden): widgets.test.flotilla.dev \"sprocket\" is forbidden: User \"system:serviceaccount:team:viewer\" cannot delete resource \"widgets\" in API group \"test.flotilla.dev\" in the namespace \"team\""),
        "{err}"
    );
    let (success, _, err) =
        kubectl(&admin, &["-n", "team", "create", "token", "nobody"], None).await;
    assert!(!success);
    assert!(
        err.contains("serviceaccounts \"nobody\" not found"),
        "{err}"
    );

    // The ServiceAccount's own kubeconfig: can-i yes and no.
    let viewer = dir.path().join("viewer");
    sb.write_kubeconfig_for_token(&viewer, token).unwrap();
    let out = ok(
        &viewer,
        &["-n", "team", "auth", "can-i", "list", "widgets"],
        None,
    )
    .await;
    assert_eq!(out.trim(), "yes");
    let (success, out, _) = kubectl(
        &viewer,
        &["-n", "team", "auth", "can-i", "delete", "widgets"],
        None,
    )
    .await;
    assert!(!success);
    assert_eq!(out.trim(), "no");
    let (success, out, _) = kubectl(
        &viewer,
        &["-n", "default", "auth", "can-i", "list", "widgets"],
        None,
    )
    .await;
    assert!(!success);
    assert_eq!(out.trim(), "no");
    let out = ok(&viewer, &["-n", "team", "auth", "can-i", "--list"], None).await;
    assert!(out.contains("widgets.test.flotilla.dev"), "{out}");
    assert!(
        out.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{out}"
    );
    // The admin asks on the ServiceAccount's behalf with --as.
    let sa = "--as=system:serviceaccount:team:viewer";
    let out = ok(
        &admin,
        &[sa, "-n", "team", "auth", "can-i", "watch", "widgets"],
        None,
    )
    .await;
    assert_eq!(out.trim(), "yes");

    // --as: allowed for the admin, with the impersonated user's permissions.
    let out = ok(
        &admin,
        &[sa, "-n", "team", "get", "widget", "sprocket", "-o", "name"],
        None,
    )
    .await;
    assert_eq!(out.trim(), "widget.test.flotilla.dev/sprocket");
    let (success, _, err) = kubectl(&admin, &[sa, "get", "namespaces"], None).await;
    assert!(!success);
    assert!(
        err.contains("namespaces is forbidden: User \"system:serviceaccount:team:viewer\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    // ... and refused to the ServiceAccount, which may not impersonate.
    let (success, _, err) = kubectl(
        &viewer,
        &[
            "--as=bob",
            "get",
            "--raw",
            "/apis/test.flotilla.dev/v1/namespaces/team/widgets",
        ],
        None,
    )
    .await;
    assert!(!success);
    assert!(
        err.contains("users \"bob\" is forbidden: User \"system:serviceaccount:team:viewer\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );

    // An unknown token: 401 (without any, kubectl would prompt for a password).
    let anonymous = dir.path().join("anonymous");
    sb.write_kubeconfig_for_token(&anonymous, "not-a-token")
        .unwrap();
    let (success, _, err) = kubectl(&anonymous, &["get", "namespaces"], None).await;
    assert!(!success);
    assert!(
        err.contains("Unauthorized") || err.contains("provide credentials"),
        "{err}"
    );
}
