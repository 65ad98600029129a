//! The kubeconfig that points kubectl and other clients at a sandbox.

/// A kubeconfig with one cluster, user and context, all named `flotilla-sandbox`. The sandbox
/// does not authenticate, so the user carries a fixed token that is never checked.
pub fn render(server: &str) -> String {
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
    token: flotilla-sandbox
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
