//! An in-memory Kubernetes API server for Flotilla's tests, benchmarks and local demo.
//!
//! No real cluster can run where Flotilla is developed and tested, so the sandbox serves the
//! parts of the Kubernetes API that Flotilla's controllers and `kubectl` depend on, over real
//! HTTP on 127.0.0.1: discovery, get/list/watch with selectors and paging, create/update/patch
//! (merge, JSON, strategic, server-side apply), the status subresource, finalizers, garbage
//! collection, namespace termination, CRD schema validation, Table output — and fault injection
//! and a request log for tests.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sandbox = flotilla_sandbox::Sandbox::start().await?;
//! let client = sandbox.client();
//! # Ok(()) }
//! ```

pub mod apply;
pub mod discovery;
pub mod error;
pub mod events;
pub mod faults;
mod kubeconfig;
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
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            crds: Vec::new(),
            watch_window: WatchWindow::apiserver(),
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
        let state = server::AppState {
            store: store.clone(),
            faults: Arc::new(Faults::default()),
            requests: Arc::new(RequestLog::default()),
            shutdown: shutdown.clone(),
        };
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(state.clone());
        let serve_shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "sandbox API server stopped");
            }
        });
        let sandbox = Sandbox {
            addr,
            state,
            shutdown,
            task: Some(task),
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

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A real `kube::Client` talking HTTP to this sandbox, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let config = self.kube_config();
        kube::Client::try_from(config).expect("a plain-HTTP client config is always valid")
    }

    /// The `kube::Config` of [`Sandbox::client`].
    pub fn kube_config(&self) -> kube::Config {
        let uri = self.url().parse().expect("the sandbox URL is a valid URI");
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        config
    }

    /// A kubeconfig for kubectl and other clients.
    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        kube::config::Kubeconfig::from_yaml(&kubeconfig::render(&self.url()))
            .expect("the generated kubeconfig parses")
    }

    /// Writes a kubeconfig file for kubectl (`kubectl --kubeconfig <path> get flotilla -A`).
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), SandboxError> {
        let path = path.as_ref();
        std::fs::write(path, kubeconfig::render(&self.url())).map_err(|source| {
            SandboxError::Kubeconfig {
                path: path.display().to_string(),
                source,
            }
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
