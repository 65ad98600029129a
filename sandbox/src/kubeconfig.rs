//! The kubeconfig that points kubectl and other clients at a sandbox.

/// A kubeconfig with one cluster, user and context, all named `flotilla-sandbox`, whose user
/// carries `token` (the admin token [`crate::auth::ADMIN_TOKEN`] by default, which a sandbox
/// checks only when it enforces RBAC).
pub fn render_with_token(server: &str, token: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: flotilla-sandbox
  cluster:
    server: {server}
users:
- name: flotilla-sandbox
  user:
    token: {token}
contexts:
- name: flotilla-sandbox
  context:
    cluster: flotilla-sandbox
    user: flotilla-sandbox
    namespace: default
current-context: flotilla-sandbox
preferences: {{}}
"#
    )
}
