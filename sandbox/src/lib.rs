//! An in-memory Kubernetes API server for Flotilla's tests, benchmarks and local demo.
//!
//! No real cluster can run where Flotilla is developed and tested, so the sandbox serves the
//! parts of the Kubernetes API that Flotilla's controllers and `kubectl` depend on, over real
//! HTTP on 127.0.0.1: discovery, get/list/watch with selectors and paging, create/update/patch
//! (merge, JSON, strategic, server-side apply), the status subresource, finalizers, garbage
//! collection, namespace termination, CRD schema validation, Table output — and fault injection
//! and a request log for tests.
//!
//! Opt-in with [`SandboxBuilder::enforce_rbac`], it authenticates (admin token, TokenRequest
//! ServiceAccount tokens, impersonation) and authorizes every request with RBAC as the
//! kube-apiserver does, over HTTPS; see [`auth`] and [`rbac`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sandbox = flotilla_sandbox::Sandbox::start().await?;
//! let client = sandbox.client();
//! # Ok(()) }
//! ```

pub mod apply;
pub mod auth;
pub mod discovery;
pub mod error;
pub mod events;
pub mod faults;
mod kubeconfig;
pub mod kubectl;
pub mod list_type;
pub mod names;
mod openapi;
pub mod patch;
mod protobuf;
pub mod quota;
pub mod rbac;
pub mod registry;
pub mod requests;
pub mod schema;
pub mod selector;
pub mod server;
pub mod status_error;
pub mod store;
pub mod table;
mod tls;
pub mod watch_window;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use tokio_util::sync::CancellationToken;

pub use faults::{FaultRule, Faults, Verb};
pub use requests::{RequestLog, RequestRecord};
pub use watch_window::WatchWindow;

use registry::{Registry, ResourceKey};
use store::{Store, WriteOptions};

/// Errors starting or configuring a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("building a client for the sandbox: {0}")]
    Client(#[from] kube::Error),
    #[error("installing CRD {name}: {message}")]
    Crd { name: String, message: String },
    #[error("minting a token for ServiceAccount {namespace}/{name}: {message}")]
    Token {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("creating objects from a manifest: {message}")]
    Manifest { message: String },
    #[error("generating the TLS certificate: {message}")]
    Tls { message: String },
    #[error("writing kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: std::io::Error,
    },
}

/// Configures a sandbox before it starts.
pub struct SandboxBuilder {
    addr: SocketAddr,
    crds: Vec<CustomResourceDefinition>,
    watch_window: WatchWindow,
    enforce_rbac: bool,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            crds: Vec::new(),
            watch_window: WatchWindow::apiserver(),
            enforce_rbac: false,
        }
    }
}

impl SandboxBuilder {
    /// Listen address; the default is 127.0.0.1 on a free port.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// CRDs to serve from the start.
    pub fn crds(mut self, crds: impl IntoIterator<Item = CustomResourceDefinition>) -> Self {
        self.crds.extend(crds);
        self
    }

    /// How many events of each resource are retained for watches to resume from (and for
    /// the snapshots `continue` tokens list); a watch from an older resourceVersion gets an
    /// ERROR event with `410 Expired`, a list page `410` too, and clients re-list.
    ///
    /// A number is a fixed window of that many events per resource:
    /// `.watch_window(20)` makes the re-list path run in ordinary tests. The default,
    /// [`WatchWindow::apiserver`], sizes the window like the kube-apiserver's watch cache
    /// (100 events per resource, growing to 102 400 while events are younger than 75 s).
    pub fn watch_window(mut self, window: impl Into<WatchWindow>) -> Self {
        self.watch_window = window.into();
        self
    }

    /// Authenticates every request and authorizes it with RBAC, as a kube-apiserver with
    /// `--authorization-mode=RBAC` does (off by default: then every request is served). The
    /// sandbox then serves HTTPS with a self-signed certificate ([`Sandbox::ca_pem`]), since
    /// kubectl sends no credentials over plain HTTP; [`Sandbox::url`] is `https://...`.
    ///
    /// [`Sandbox::client`], [`Sandbox::kube_config`] and the kubeconfigs carry the admin token
    /// ([`auth::ADMIN_TOKEN`]: user `sandbox-admin` in `system:masters`, allowed everything).
    /// ServiceAccount tokens come from the TokenRequest API (`kubectl create token`) or
    /// [`Sandbox::service_account_token`]; the Roles, ClusterRoles and bindings in the store
    /// take effect at once; `Impersonate-*` headers, `SelfSubjectAccessReview`,
    /// `SelfSubjectRulesReview` and `SelfSubjectReview` are served; the bootstrap policy
    /// (`cluster-admin`, `system:discovery`, `system:basic-user`,
    /// `system:public-info-viewer`) is installed and ClusterRoles with an `aggregationRule`
    /// are kept aggregated. See `docs/sandbox.md`.
    pub fn enforce_rbac(mut self) -> Self {
        self.enforce_rbac = true;
        self
    }

    pub async fn start(self) -> Result<Sandbox, SandboxError> {
        // The clients of a test or a benchmark are built after this: see
        // flotilla_runtime::crypto (the sandbox depends on nothing of Flotilla's).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = Store::new(Registry::with_builtins(), self.watch_window);
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: self.addr.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: self.addr.to_string(),
            source,
        })?;
        let shutdown = CancellationToken::new();
        let tls = if self.enforce_rbac {
            Some(tls::Tls::generate().map_err(|message| SandboxError::Tls { message })?)
        } else {
            None
        };
        let state = server::AppState {
            store: store.clone(),
            faults: Arc::new(Faults::default()),
            requests: Arc::new(RequestLog::default()),
            shutdown: shutdown.clone(),
            auth: self.enforce_rbac.then(|| Arc::new(auth::Auth::default())),
        };
        if self.enforce_rbac {
            auth::install_bootstrap_policy(&store).map_err(|e| SandboxError::Crd {
                name: "bootstrap RBAC policy".into(),
                message: e.body.to_string(),
            })?;
            auth::spawn_aggregation(store.clone(), shutdown.clone());
        }
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(state.clone());
        let serve_shutdown = shutdown.clone();
        let task = match &tls {
            // kubectl (client-go) sends no credentials over plain HTTP, so a sandbox that
            // authenticates serves HTTPS, with a certificate of its own.
            Some(tls) => {
                let listener = listener.into_std().map_err(|source| SandboxError::Bind {
                    addr: addr.to_string(),
                    source,
                })?;
                let server = axum_server::from_tcp_rustls(listener, tls.server_config()).map_err(
                    |source| SandboxError::Bind {
                        addr: addr.to_string(),
                        source,
                    },
                )?;
                let handle = axum_server::Handle::new();
                let stopping = handle.clone();
                tokio::spawn(async move {
                    serve_shutdown.cancelled().await;
                    stopping.graceful_shutdown(Some(std::time::Duration::from_secs(1)));
                });
                tokio::spawn(async move {
                    if let Err(e) = server.handle(handle).serve(app.into_make_service()).await {
                        tracing::error!(error = %e, "sandbox API server stopped");
                    }
                })
            }
            None => tokio::spawn(async move {
                let result = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "sandbox API server stopped");
                }
            }),
        };
        let sandbox = Sandbox {
            addr,
            state,
            shutdown,
            task: Some(task),
            tls,
        };
        sandbox.install_crds(self.crds)?;
        Ok(sandbox)
    }
}

/// A running in-memory API server. Stops when dropped or on [`Sandbox::shutdown`].
pub struct Sandbox {
    addr: SocketAddr,
    state: server::AppState,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    tls: Option<tls::Tls>,
}

impl Sandbox {
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// Starts a sandbox on a free port of 127.0.0.1 serving the built-in kinds.
    pub async fn start() -> Result<Sandbox, SandboxError> {
        Self::builder().start().await
    }

    /// Serves these CRDs, exactly as creating them through the API would.
    pub fn install_crds(
        &self,
        crds: impl IntoIterator<Item = CustomResourceDefinition>,
    ) -> Result<(), SandboxError> {
        let key = ResourceKey::new("apiextensions.k8s.io", "customresourcedefinitions");
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let mut body = serde_json::to_value(&crd).map_err(|e| SandboxError::Crd {
                name: name.clone(),
                message: e.to_string(),
            })?;
            if let Some(obj) = body.as_object_mut() {
                obj.insert("apiVersion".into(), "apiextensions.k8s.io/v1".into());
                obj.insert("kind".into(), "CustomResourceDefinition".into());
            }
            let opts = WriteOptions {
                field_manager: Some("flotilla-sandbox".into()),
                ..Default::default()
            };
            self.state
                .store
                .create(&key, "", body, &opts)
                .map_err(|e| SandboxError::Crd {
                    name,
                    message: e.body.to_string(),
                })?;
        }
        Ok(())
    }

    /// Creates every object of a multi-document YAML manifest, in order, as `kubectl create
    /// -f` run by the admin would (without RBAC checks): e.g. the files of `config/rbac`, whose
    /// namespaces must exist. ClusterRoles are aggregated at once.
    pub fn create_from_yaml(&self, yaml: &str) -> Result<(), SandboxError> {
        use serde::Deserialize as _;
        let error = |message: String| SandboxError::Manifest { message };
        let registry = self.state.store.registry();
        for document in serde_norway::Deserializer::from_str(yaml) {
            let object =
                serde_json::Value::deserialize(document).map_err(|e| error(e.to_string()))?;
            if object.is_null() {
                continue;
            }
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let kind = object["kind"].as_str().unwrap_or_default();
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let resource = registry
                .iter()
                .find(|r| r.group == group && r.version == version && r.kind == kind)
                .ok_or_else(|| error(format!("{api_version} {kind} is not served")))?;
            let namespace = if resource.namespaced {
                object
                    .pointer("/metadata/namespace")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("default")
                    .to_owned()
            } else {
                String::new()
            };
            let opts = WriteOptions {
                field_manager: Some("kubectl-create".into()),
                ..Default::default()
            };
            let key = resource.storage.clone().unwrap_or_else(|| resource.key());
            self.state
                .store
                .create(&key, &namespace, object, &opts)
                .map_err(|e| error(e.body["message"].as_str().unwrap_or_default().to_owned()))?;
        }
        if self.rbac_enforced() {
            auth::aggregate_cluster_roles(&self.state.store);
        }
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` when RBAC is enforced (see
    /// [`Sandbox::ca_pem`]).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// The PEM certificate a sandbox that enforces RBAC serves HTTPS with (self-signed, for
    /// 127.0.0.1 and localhost): what clients trust. The configs and kubeconfigs of the
    /// sandbox carry it already.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.cert_pem.as_str())
    }

    /// A real `kube::Client` talking to this sandbox (as the admin when RBAC is enforced),
    /// default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let config = self.kube_config();
        kube::Client::try_from(config).expect("a plain-HTTP client config is always valid")
    }

    /// The `kube::Config` of [`Sandbox::client`] (with the admin token when RBAC is
    /// enforced).
    pub fn kube_config(&self) -> kube::Config {
        let mut config = self.kube_config_for_token(auth::ADMIN_TOKEN);
        if !self.rbac_enforced() {
            config.auth_info.token = None;
        }
        config
    }

    /// Whether this sandbox authenticates and authorizes requests
    /// ([`SandboxBuilder::enforce_rbac`]).
    pub fn rbac_enforced(&self) -> bool {
        self.state.auth.is_some()
    }

    /// A `kube::Config` that authenticates with a bearer token (default namespace `default`).
    pub fn kube_config_for_token(&self, token: &str) -> kube::Config {
        let uri = self.url().parse().expect("the sandbox URL is a valid URI");
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        config.auth_info.token = Some(secrecy::SecretString::from(token.to_owned()));
        if let Some(tls) = &self.tls {
            config.root_cert = Some(vec![tls.cert_der.clone()]);
        }
        config
    }

    /// A client that authenticates with a bearer token.
    pub fn client_for_token(&self, token: &str) -> kube::Client {
        kube::Client::try_from(self.kube_config_for_token(token))
            .expect("a plain-HTTP client config is always valid")
    }

    /// A client of the admin that impersonates a user and groups (`kubectl --as USER
    /// --as-group GROUP`); a ServiceAccount is `system:serviceaccount:NS:NAME`.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        let mut config = self.kube_config_for_token(auth::ADMIN_TOKEN);
        config.auth_info.impersonate = Some(user.to_owned());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups =
                Some(groups.iter().map(|g| (*g).to_owned()).collect());
        }
        kube::Client::try_from(config).expect("a plain-HTTP client config is always valid")
    }

    /// Mints a token for a ServiceAccount, valid for an hour, as `kubectl create token`
    /// does. Fails when the ServiceAccount does not exist or RBAC is not enforced.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, SandboxError> {
        self.service_account_token_for(namespace, name, std::time::Duration::from_secs(3600))
    }

    /// Like [`Sandbox::service_account_token`] with any lifetime, also shorter than the API's
    /// minimum of 10 minutes (to test expiry).
    pub fn service_account_token_for(
        &self,
        namespace: &str,
        name: &str,
        lifetime: std::time::Duration,
    ) -> Result<String, SandboxError> {
        let error = |message: String| SandboxError::Token {
            namespace: namespace.into(),
            name: name.into(),
            message,
        };
        let auth = self
            .state
            .auth
            .as_ref()
            .ok_or_else(|| error("the sandbox does not enforce RBAC".into()))?;
        auth.mint(
            &self.state.store,
            namespace,
            name,
            vec![auth::API_AUDIENCE.to_owned()],
            lifetime,
        )
        .map(|(token, _)| token)
        .map_err(|e| error(e.body["message"].as_str().unwrap_or_default().to_owned()))
    }

    /// A client authenticated as a ServiceAccount, with a token minted for it.
    pub fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client, SandboxError> {
        let token = self.service_account_token(namespace, name)?;
        let mut config = self.kube_config_for_token(&token);
        config.default_namespace = namespace.to_owned();
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig for kubectl and other clients (the admin's token).
    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        self.kubeconfig_for_token(auth::ADMIN_TOKEN)
    }

    /// A kubeconfig whose user authenticates with this token.
    pub fn kubeconfig_for_token(&self, token: &str) -> kube::config::Kubeconfig {
        kube::config::Kubeconfig::from_yaml(&kubeconfig::render_with_token(
            &self.url(),
            token,
            self.ca_pem(),
        ))
        .expect("the generated kubeconfig parses")
    }

    /// Writes a kubeconfig file for kubectl (`kubectl --kubeconfig <path> get flotilla -A`).
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), SandboxError> {
        self.write_kubeconfig_for_token(path, auth::ADMIN_TOKEN)
    }

    /// Writes a kubeconfig file whose user authenticates with this token.
    pub fn write_kubeconfig_for_token(
        &self,
        path: impl AsRef<Path>,
        token: &str,
    ) -> Result<(), SandboxError> {
        let path = path.as_ref();
        std::fs::write(
            path,
            kubeconfig::render_with_token(&self.url(), token, self.ca_pem()),
        )
        .map_err(|source| SandboxError::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    pub fn requests(&self) -> &RequestLog {
        &self.state.requests
    }

    /// The store behind the server, for assertions that bypass HTTP.
    pub fn store(&self) -> &Arc<Store> {
        &self.state.store
    }

    /// Ends watches from any earlier resourceVersion with 410 Gone (as after an etcd
    /// compaction) and cuts the open ones so that clients must resume. Continue tokens of
    /// lists in progress expire too.
    pub fn expire_watches(&self) {
        self.state.store.compact();
        self.state.faults.cut_watches();
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
