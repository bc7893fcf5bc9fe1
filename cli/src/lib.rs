//! `kumo`, the command-line client of Kumo's native JSON API.
//!
//! The binary is a thin `main`; everything lives here so tests can call it:
//! [`args`] parses, [`commands`] calls the controller through [`client`] and
//! prints with [`render`] and [`output`]. Only `main` uses `anyhow`.

pub mod args;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod metrics_view;
pub mod output;
pub mod render;
pub mod wait;

pub use args::Cli;
pub use error::{error_line, Error};

use args::Command;
use commands::{access_key, admin, auth, billing, image, instance, keypair, network, quota, snapshot, volume, Ctx};
use config::Config;

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let config_path = match cli.config {
        Some(path) => path,
        None => Config::default_path()?,
    };
    let ctx = Ctx {
        output: cli.output,
        config_path,
        endpoint: cli.endpoint.filter(|e| !e.is_empty()),
        ca_cert: cli.ca_cert.filter(|p| !p.as_os_str().is_empty()),
        env_token: std::env::var("KUMO_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    if cli.output == args::OutputFormat::Csv
        && !matches!(cli.command, Command::Billing(args::BillingCommand::Invoice { .. }))
    {
        return Err(Error::Invalid("--output csv is available for kumo billing invoice only".into()));
    }
    match cli.command {
        Command::Login(args) => auth::login(&ctx, args).await,
        Command::Logout => auth::logout(&ctx),
        Command::Instance(command) => instance::dispatch(&ctx, command).await,
        Command::Image(command) => image::dispatch(&ctx, command).await,
        Command::Flavor(command) => admin::flavor(&ctx, command).await,
        Command::KeyPair(command) => keypair::dispatch(&ctx, command).await,
        Command::AccessKey(command) => access_key::dispatch(&ctx, command).await,
        Command::Host(command) => admin::host(&ctx, command).await,
        Command::Project(command) => admin::project(&ctx, command).await,
        Command::User(command) => admin::user(&ctx, command).await,
        Command::Billing(command) => billing::dispatch(&ctx, command).await,
        Command::Volume(command) => volume::dispatch(&ctx, command).await,
        Command::Snapshot(command) => snapshot::dispatch(&ctx, command).await,
        Command::Quota(command) => quota::dispatch(&ctx, command).await,
        Command::Network(command) => network::network(&ctx, command).await,
        Command::SecurityGroup(command) => network::security_group(&ctx, command).await,
        Command::FloatingIp(command) => network::floating_ip(&ctx, command).await,
        Command::Admin(command) => network::admin(&ctx, command).await,
    }
}
