//! `kumo-api`: runs the controller.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kumo_api::config::ControllerConfig;
use kumo_api::Controller;

/// The Kumo controller.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (settings can also come from KUMO_* variables).
    #[arg(long, env = "KUMO_CONFIG_FILE")]
    config: Option<PathBuf>,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = ControllerConfig::load(args.config.as_deref(), std::env::vars())?;
    let listen = config.listen.clone();
    let controller = Controller::start(config).await?;
    if let Some(password) = &controller.bootstrapped.new_admin_password {
        let dir = &controller.state.config.data_dir;
        tracing::info!(
            "created admin user '{}'; password in {} ({} characters)",
            controller.state.config.admin_username,
            dir.join("admin-password").display(),
            password.len()
        );
    }
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!("kumo-api listening on http://{}", listener.local_addr()?);
    let app = controller.router().layer(tower_http::trace::TraceLayer::new_for_http());
    // With the peer's address, for the login throttle.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    controller.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KUMO_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
