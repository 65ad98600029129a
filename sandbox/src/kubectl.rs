//! The real `kubectl` against a sandbox, for conformance and GitOps tests.
//!
//! kubectl is on the project's machines and `.ci/run` installs it; where it is missing a test
//! may skip, unless `FLOTILLA_REQUIRE_KUBECTL=1` (set by CI) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Sandbox, SandboxError};

/// What one kubectl run printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// kubectl bound to one kubeconfig file.
pub struct Kubectl {
    kubeconfig: PathBuf,
    /// Keeps a kubeconfig written by [`Kubectl::admin`] alive.
    _owned: Option<tempfile::TempPath>,
}

impl Kubectl {
    /// Whether kubectl is on PATH; panics where it is missing and `FLOTILLA_REQUIRE_KUBECTL`
    /// is set, so CI cannot skip a kubectl test by accident.
    pub fn available() -> bool {
        let found = Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok();
        if !found {
            assert!(
                std::env::var("FLOTILLA_REQUIRE_KUBECTL").is_err(),
                "kubectl is required (FLOTILLA_REQUIRE_KUBECTL is set) but not on PATH"
            );
            eprintln!("kubectl not found on PATH: skipping a kubectl test");
        }
        found
    }

    /// kubectl as the sandbox's admin.
    pub fn admin(sandbox: &Sandbox) -> Result<Self, SandboxError> {
        let file = tempfile::NamedTempFile::new().map_err(|source| SandboxError::Kubeconfig {
            path: "a temporary file".into(),
            source,
        })?;
        sandbox.write_kubeconfig(file.path())?;
        let path = file.into_temp_path();
        Ok(Self {
            kubeconfig: path.to_path_buf(),
            _owned: Some(path),
        })
    }

    /// kubectl with the kubeconfig at `path`.
    pub fn with_kubeconfig(path: &Path) -> Self {
        Self {
            kubeconfig: path.to_path_buf(),
            _owned: None,
        }
    }

    /// Runs kubectl off the async runtime (the sandbox serves on it), with a fresh discovery
    /// cache: kubectl caches discovery per host:port for hours, which would hide CRDs
    /// installed during a test.
    pub async fn try_run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kubeconfig = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let cache = tempfile::tempdir().expect("a temporary directory");
            let mut child = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--cache-dir")
                .arg(cache.path())
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kubectl starts");
            if let Some(input) = stdin {
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(input.as_bytes())
                    .expect("kubectl reads its stdin");
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().expect("kubectl ends");
            Output {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .await
        .expect("the kubectl task")
    }

    /// As [`Kubectl::try_run`]; panics with stderr when kubectl fails, else returns stdout.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.try_run(args, stdin).await;
        assert!(
            out.success,
            "kubectl {args:?} failed:\n{}\n{}",
            out.stderr, out.stdout
        );
        out.stdout
    }
}
