//! Flotilla's scenario suite: whole features driven as a user would drive them.
//!
//! One backend switch and nothing else differs: when `FLOTILLA_E2E_KUBECONFIG` names a
//! kubeconfig, the scenarios run against that cluster (the CRDs are installed by applying the
//! generated definitions, and the operator runs in this process against it — stop any operator
//! already running there first); otherwise they run against an in-memory sandbox API server.
//!
//! Who the operator is: against the sandbox, which then enforces RBAC, `config/rbac/` is
//! applied from its files and the operator runs as its ServiceAccount
//! `flotilla-system/flotilla` (the scenario's own client is the admin), and a scenario fails
//! when the sandbox refused the operator anything; the device gateway runs as its own
//! ServiceAccount with `gateway_role.yaml` copied into the namespace it serves. Against a real
//! cluster the operator and the gateway run as the kubeconfig's user, like the scenario itself:
//! that user needs the rights to install CRDs anyway, so a cluster run does not test RBAC
//! (the sandbox run does).
//! Every object a scenario creates carries a per-run suffix, so runs never collide on a shared
//! cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use flotilla::runtime::{Config, Operator, Shutdown, SystemClock};
use flotilla::testing::wait_for;
use flotilla_sandbox::Sandbox;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

/// The environment variable that switches the suite to a real cluster.
pub const KUBECONFIG_ENV: &str = "FLOTILLA_E2E_KUBECONFIG";

/// The field manager of the suite's own writes (the operator writes as `flotilla`).
pub const FIELD_MANAGER: &str = "flotilla-e2e";

/// How long one step of a scenario may take. Real clusters are slower than the sandbox.
pub fn step_timeout(env: &Environment) -> Duration {
    match env.backend {
        Backend::Sandbox(_) => Duration::from_secs(15),
        Backend::Cluster => Duration::from_secs(60),
    }
}

/// Where the scenarios run.
pub enum Backend {
    /// The in-memory API server.
    Sandbox(Sandbox),
    /// The cluster of `FLOTILLA_E2E_KUBECONFIG`.
    Cluster,
}

/// A backend with the CRDs installed and the operator running against it.
pub struct Environment {
    /// A client for the scenario's own requests (the sandbox's admin, or the kubeconfig's
    /// user).
    pub client: Client,
    /// The backend.
    pub backend: Backend,
    operator: Operator,
    controllers: Option<JoinHandle<()>>,
    run_id: String,
}

impl Environment {
    /// Prepares the backend named by the environment and starts the operator.
    pub async fn start() -> anyhow::Result<Self> {
        let (client, operator_client, backend) = match std::env::var_os(KUBECONFIG_ENV) {
            Some(path) => {
                let client = cluster_client(Path::new(&path)).await?;
                install_crds(&client).await?;
                (client.clone(), client, Backend::Cluster)
            }
            None => {
                let sandbox = Sandbox::builder()
                    .crds(flotilla_crds::all_crds())
                    .enforce_rbac()
                    .start()
                    .await
                    .context("starting the sandbox")?;
                flotilla_testkit::rbac::install(&sandbox).await;
                let operator_client =
                    Client::try_from(flotilla_testkit::rbac::operator_kube_config(&sandbox))
                        .context("the operator's client")?;
                (sandbox.client(), operator_client, Backend::Sandbox(sandbox))
            }
        };
        let config = Config {
            backoff_cap: Duration::from_secs(5),
            ..Config::default()
        };
        let operator = Operator::new(
            operator_client,
            config,
            Arc::new(SystemClock),
            Shutdown::new(),
        )
        .context("operator")?;
        let running = operator.clone();
        let controllers = tokio::spawn(async move { flotilla::run_controllers(&running).await });
        let env = Self {
            client,
            backend,
            operator,
            controllers: Some(controllers),
            run_id: run_id(),
        };
        let readiness = env.operator.readiness.clone();
        wait_for("the operator's caches to sync", step_timeout(&env), || {
            let ready = readiness.report().is_ready();
            async move { ready.then_some(()) }
        })
        .await?;
        Ok(env)
    }

    /// `base` with this run's suffix: the name to give an object the scenario creates.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.run_id)
    }

    /// Server-side applies a cluster-scoped object (given as JSON, e.g. a sample) under
    /// [`FIELD_MANAGER`] and returns what the server stored.
    pub async fn apply<K>(&self, object: &serde_json::Value) -> anyhow::Result<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = object["metadata"]["name"]
            .as_str()
            .context("the object has no metadata.name")?;
        let api: Api<K> = Api::all(self.client.clone());
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(object),
        )
        .await
        .with_context(|| format!("applying {} {name}", K::kind(&())))
    }

    /// Waits until the cluster-scoped object `name` of kind `K` no longer exists.
    pub async fn wait_until_gone<K>(&self, name: &str) -> anyhow::Result<()>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        wait_for(
            format!("{} {name} to be gone", K::kind(&())),
            step_timeout(self),
            || async { matches!(api.get_opt(name).await, Ok(None)).then_some(()) },
        )
        .await?;
        Ok(())
    }

    /// The client the device gateway serving `namespace` runs with: on the sandbox its
    /// ServiceAccount, with `config/rbac/gateway_role.yaml` and its binding copied into
    /// `namespace` (as `config/rbac/kustomization.yaml` says to do for each namespace served);
    /// on a cluster the kubeconfig's user.
    pub fn gateway_client(&self, namespace: &str) -> anyhow::Result<Client> {
        match &self.backend {
            Backend::Sandbox(sandbox) => {
                flotilla_testkit::rbac::install_gateway_role_in(sandbox, namespace);
                Client::try_from(flotilla_testkit::rbac::service_account_kube_config(
                    sandbox,
                    flotilla_testkit::rbac::GATEWAY_SERVICE_ACCOUNT,
                ))
                .context("the gateway's client")
            }
            Backend::Cluster => Ok(self.client.clone()),
        }
    }

    /// Stops the operator, letting in-flight reconciles finish, and the sandbox if any; fails
    /// when the sandbox refused the operator or the gateway a request.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.operator.shutdown.trigger();
        if let Some(controllers) = self.controllers.take() {
            tokio::time::timeout(Duration::from_secs(30), controllers)
                .await
                .context("the controllers did not stop after the shutdown signal")??;
        }
        if let Backend::Sandbox(sandbox) = std::mem::replace(&mut self.backend, Backend::Cluster) {
            let refused: Vec<String> = [
                flotilla_testkit::rbac::operator_user(),
                flotilla_testkit::rbac::gateway_user(),
            ]
            .iter()
            .flat_map(|user| flotilla_testkit::rbac::denied_for(&sandbox, user))
            .collect();
            sandbox.shutdown().await;
            if !refused.is_empty() {
                bail!("the sandbox refused requests config/rbac does not grant: {refused:#?}");
            }
        }
        Ok(())
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.operator.shutdown.trigger();
    }
}

async fn cluster_client(path: &Path) -> anyhow::Result<Client> {
    flotilla_runtime::crypto::use_ring();
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading {KUBECONFIG_ENV}={}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    Client::try_from(config).context("building the client")
}

/// Applies the generated CRDs (server-side apply) and waits until the cluster serves them.
async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in flotilla_crds::all_crds() {
        let name = crd.name_any();
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        let crds = crds.clone();
        wait_for(
            format!("CRD {name} to be Established"),
            Duration::from_secs(60),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get_opt(&name).await.ok().flatten()?;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// A short suffix that differs between runs.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut n = (nanos ^ u128::from(std::process::id())) % 36u128.pow(6);
    let mut id = String::new();
    for _ in 0..6 {
        let digit = u32::try_from(n % 36).unwrap_or(0);
        id.push(char::from_digit(digit, 36).unwrap_or('0'));
        n /= 36;
    }
    id
}

/// The repository's `config/samples/` directory.
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/samples")
}

/// Every YAML document under `config/samples/` whose `kind` is `kind`, in path order.
pub fn samples_of_kind(kind: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut files = Vec::new();
    collect_yaml(&samples_dir(), &mut files)?;
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for document in serde_norway::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document)
                .with_context(|| format!("parsing {}", file.display()))?;
            if value["kind"] == kind {
                found.push(value);
            }
        }
    }
    if found.is_empty() {
        bail!("no {kind} under {}", samples_dir().display());
    }
    Ok(found)
}

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_yaml(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_dns_label_safe() {
        let id = run_id();
        assert_eq!(id.len(), 6);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
