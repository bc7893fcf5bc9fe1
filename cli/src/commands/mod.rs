//! One module per command group; each turns parsed arguments into API calls
//! and printed output.

pub mod access_key;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod image;
pub mod instance;
pub mod keypair;
pub mod network;
pub mod quota;
pub mod snapshot;
pub mod volume;

use std::path::PathBuf;

use kumo_wire::Timestamp;

use crate::args::OutputFormat;
use crate::client::{Client, Reply};
use crate::config::{self, Config};
use crate::error::Error;
use crate::output;

/// What every command needs besides its own arguments.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `--output`.
    pub output: OutputFormat,
    /// The config file in use.
    pub config_path: PathBuf,
    /// `--endpoint` or `KUMO_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `KUMO_TOKEN`.
    pub env_token: Option<String>,
}

impl Ctx {
    /// Whether `--output json` was asked for.
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// A client with the saved (or `KUMO_TOKEN`) credentials; fails with
    /// "not logged in" when there is no valid token.
    pub fn client(&self) -> Result<Client, Error> {
        let config = Config::load(&self.config_path)?;
        let creds =
            config::credentials(&config, self.endpoint.as_deref(), self.env_token.as_deref(), Timestamp::now())?;
        Client::new(&creds.endpoint, Some(creds.token))
    }

    /// Prints `reply`: its body as received with `--output json`, else the
    /// table `render` makes of it.
    pub fn show<T>(&self, reply: &Reply<T>, render: impl FnOnce(&T) -> String) -> Result<(), Error> {
        if self.json() {
            output::print_json(&reply.raw)
        } else {
            output::print(&render(&reply.value))
        }
    }

    /// Prints a list: the body with `--output json`; else the table, or
    /// `empty` on standard error when there is nothing to show.
    pub fn show_list<T>(
        &self,
        reply: &Reply<T>,
        is_empty: bool,
        empty: &str,
        render: impl FnOnce(&T) -> String,
    ) -> Result<(), Error> {
        if !self.json() && is_empty {
            output::note(empty);
            return Ok(());
        }
        self.show(reply, render)
    }

    /// Prints a confirmation for answers without a body (204); nothing with `--output json`.
    pub fn done(&self, message: &str) -> Result<(), Error> {
        if self.json() {
            Ok(())
        } else {
            output::print(message)
        }
    }
}
