//! The kubeconfig that points kubectl and other clients at a sandbox.

/// A kubeconfig with one cluster, user and context, all named `flotilla-sandbox`, whose user
/// carries `token` and, for HTTPS, trusts `ca_pem` (the admin token [`crate::auth::ADMIN_TOKEN`] by default, which a sandbox
/// checks only when it enforces RBAC).
pub fn render_with_token(server: &str, token: &str, ca_pem: Option<&str>) -> String {
    use base64::Engine as _;
    let ca = ca_pem
        .map(|pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: flotilla-sandbox
  cluster:
    server: {server}{ca}
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
