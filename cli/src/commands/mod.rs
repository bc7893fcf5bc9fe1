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
pub mod quarantine;
pub mod quota;
pub mod snapshot;
pub mod volume;

use std::path::PathBuf;

use kumo_wire::api::Listing;
use kumo_wire::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;

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
    /// `--ca-cert` or `KUMO_CA_CERT`.
    pub ca_cert: Option<PathBuf>,
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
        let ca = config::ca_cert(&config, self.ca_cert.as_deref());
        Client::new(&creds.endpoint, Some(creds.token), ca.as_deref())
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

    /// Prints a whole list: `{"items": [...], "next": null}` with `--output
    /// json` (the API's envelope), else the table, or `empty` on standard
    /// error when there is nothing to show.
    pub fn show_listing<T: Serialize>(
        &self,
        listing: &Listing<T>,
        empty: &str,
        render: impl FnOnce(&[T]) -> String,
    ) -> Result<(), Error> {
        if self.json() {
            output::print_json_value(listing)
        } else if listing.items.is_empty() {
            output::note(empty);
            Ok(())
        } else {
            output::print(&render(&listing.items))
        }
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

/// Every page of the list at `segments`: asks with `query` (plus `after`)
/// and follows `next` until the last page, the same way for every list.
pub async fn fetch_all<T: DeserializeOwned>(
    client: &Client,
    segments: &[&str],
    query: &[(&str, String)],
) -> Result<Listing<T>, Error> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = query.to_vec();
        if let Some(cursor) = &after {
            q.push(("after", cursor.clone()));
        }
        let page: Reply<Listing<T>> = client.get(segments, &q).await?;
        items.extend(page.value.items);
        match page.value.next {
            Some(next) if after.as_deref() == Some(next.as_str()) => {
                return Err(Error::Invalid(format!("the controller returned the same page cursor twice ({next})")));
            }
            Some(next) => after = Some(next),
            None => return Ok(Listing { items, next: None }),
        }
    }
}

/// `[("all", "true")]` when `all`, for [`fetch_all`].
pub fn all_query(all: bool) -> Vec<(&'static str, String)> {
    if all {
        vec![("all", "true".to_owned())]
    } else {
        Vec::new()
    }
}
