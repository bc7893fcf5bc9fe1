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
    /// Without a command: run the controller.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Certificates for TLS between the controller, agents and clients.
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Debug, clap::Subcommand)]
enum TlsCommand {
    /// Make a certificate and key signed by the CA in DIR (ca.pem, ca-key.pem;
    /// made first when missing). Valid for the names and addresses given plus
    /// localhost, 127.0.0.1 and ::1. Never overwrites a file.
    Generate {
        /// Where the CA and the certificates live.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The files' name: NAME.pem and NAME-key.pem.
        #[arg(long, value_name = "NAME", default_value = "controller")]
        cert: String,
        /// A DNS name the certificate is valid for (repeatable).
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
        /// An IP address the certificate is valid for (repeatable).
        #[arg(long = "ip", value_name = "ADDRESS")]
        ips: Vec<std::net::IpAddr>,
    },
}

fn tls_command(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Generate { dir, cert, names, ips } => {
            let names: Vec<String> = names.into_iter().chain(ips.iter().map(|ip| ip.to_string())).collect();
            let made = kumo_api::tls::generate(&dir, &cert, &names)?;
            if made.new_ca {
                println!("made a new CA: {} (its key beside it, mode 0600)", made.ca_cert.display());
            }
            println!(
                "wrote {} and {} (valid for {}), signed by {}",
                made.cert.display(),
                made.key.display(),
                made.names.join(", "),
                made.ca_cert.display()
            );
            Ok(())
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Tls(command)) = args.command {
        return tls_command(command);
    }
    let config = ControllerConfig::load(args.config.as_deref(), std::env::vars())?;
    let listen = config.listen.clone();
    // Read before anything starts, so a bad file stops the controller at once.
    let tls = config.server_tls()?;
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("kumo-api listening on {scheme}://{}", listener.local_addr()?);
    let app = controller.router().layer(tower_http::trace::TraceLayer::new_for_http());
    kumo_api::tls::serve(listener, app, tls, shutdown_signal()).await?;
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
