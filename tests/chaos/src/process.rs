//! One operator process: `flotilla run` with the ServiceAccount's kubeconfig, its log in a
//! file, stopped only by SIGKILL (no graceful shutdown: nothing is released or finished).

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// The leader-election Lease the replicas compete for (in `flotilla-system`, where
/// `config/rbac/leader_election_role.yaml` grants it).
pub const LEASE_NAME: &str = "flotilla-leader";

/// How an operator process runs.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `flotilla` binary.
    pub binary: PathBuf,
    /// The kubeconfig of the operator's ServiceAccount.
    pub kubeconfig: PathBuf,
    /// Where the logs go (one file per replica name, appended across restarts).
    pub log_dir: PathBuf,
    /// `Some(seconds)`: `--leader-election` with this `--lease-duration` (renewed 1 s before
    /// expiry).
    pub lease_seconds: Option<u64>,
}

/// A running operator process.
pub struct OperatorProcess {
    /// Its `--instance` (the leader-election identity).
    pub name: String,
    /// When it was started.
    pub started: Instant,
    child: Child,
}

impl Launch {
    /// Starts replica `name`.
    pub fn spawn(&self, name: &str) -> anyhow::Result<OperatorProcess> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .context("the operator's log file")?;
        let mut command = Command::new(&self.binary);
        command
            .arg("run")
            .arg(format!("--metrics-address=127.0.0.1:{}", free_port()?))
            .arg(format!("--instance={name}"))
            // Retries come back within 2 s, so a run converges in seconds after the faults.
            .arg("--backoff-cap=2s")
            .arg("--backoff-forbidden=2s")
            .arg("--log-level=info,kube=warn")
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("the log file")?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(seconds) = self.lease_seconds {
            command.args([
                "--leader-election",
                &format!("--lease-name={LEASE_NAME}"),
                &format!(
                    "--lease-namespace={}",
                    flotilla_testkit::rbac::OPERATOR_NAMESPACE
                ),
                &format!("--lease-duration={seconds}s"),
                "--lease-renew-margin=1s",
            ]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        Ok(OperatorProcess {
            name: name.to_owned(),
            started: Instant::now(),
            child,
        })
    }

    /// The log file of replica `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// The last `lines` lines of replica `name`'s log, to show with a failure.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        tail(&self.log_path(name), lines)
    }
}

impl OperatorProcess {
    /// SIGKILLs the process and reaps it; fails unless it died of that signal (an operator
    /// that exited by itself before is a finding, not a kill).
    pub async fn kill(mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("operator {} had already exited: {status}", self.name);
        }
        // tokio's start_kill is SIGKILL on Unix.
        self.child.start_kill()?;
        let status = self.child.wait().await?;
        anyhow::ensure!(
            status.signal() == Some(9),
            "operator {} ended with {status}, not by SIGKILL",
            self.name
        );
        Ok(())
    }

    /// Fails if the process exited by itself.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("operator {} exited: {status}", self.name),
        }
    }
}

/// A port that was free a moment ago, for the admin server of one process (two replicas
/// cannot share the default 8080).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
