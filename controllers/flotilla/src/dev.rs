//! `flotilla dev`: the operator against an in-memory API server, for trying Flotilla on a
//! laptop without a cluster.

use anyhow::Context as _;
use flotilla_sandbox::Sandbox;

use crate::cli::{DevArgs, run_operator};
use crate::runtime::Shutdown;

/// Starts the sandbox with Flotilla's CRDs, writes its kubeconfig, prints what to try, and runs
/// the operator against it until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .context("starting the in-memory API server")?;
    sandbox
        .write_kubeconfig(&args.kubeconfig_out)
        .with_context(|| format!("writing {}", args.kubeconfig_out.display()))?;
    let kubeconfig = args.kubeconfig_out.display();
    println!(
        "Flotilla dev: in-memory API server at {url}\n\
         kubeconfig written to {kubeconfig}\n\
         admin server: http://{admin}/metrics, /healthz, /readyz\n\
         \n\
         Next steps:\n  \
           kubectl --kubeconfig {kubeconfig} apply -f config/samples/\n  \
           kubectl --kubeconfig {kubeconfig} get flotilla -A\n  \
           kubectl --kubeconfig {kubeconfig} describe plans\n\
         \n\
         Ctrl-C stops the operator and the API server (all state is in memory).",
        url = sandbox.url(),
        admin = args.operator.metrics_address,
    );
    let result = run_operator(
        sandbox.client(),
        &args.operator,
        Shutdown::on_process_signals(),
    )
    .await;
    sandbox.shutdown().await;
    result
}
