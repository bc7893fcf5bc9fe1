//! `kumo-agent --config FILE`: the compute agent daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use kumo_agent::{Agent, AgentConfig};
use tokio_util::sync::CancellationToken;

/// The Kumo compute agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The TOML configuration file (settings may also come from KUMO_AGENT_* variables).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("kumo-agent: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(daemon());
    // A libvirt call abandoned after its time limit may still hold a blocking
    // thread; the agent exits without waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

async fn daemon() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter({
            let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
            // netlink-packet-route warns on every link dump about attributes
            // newer kernels add; nothing an operator can act on.
            match "netlink_packet_route=error".parse() {
                Ok(quiet) => filter.add_directive(quiet),
                Err(_) => filter,
            }
        })
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kumo-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = AgentConfig::load(args.config.as_deref(), std::env::vars()).context("loading the configuration")?;
    let agent = Agent::start(config).await?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping (domains keep running)");
        signals.cancel();
    });
    agent.run(shutdown).await?;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
