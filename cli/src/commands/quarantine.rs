//! `kumo admin quarantine`: the local storage files the agents moved aside.

use kumo_wire::api::{Listing, QuarantineEntry};
use kumo_wire::Timestamp;
use serde::Serialize;

use crate::args::QuarantineCommand;
use crate::client::Reply;
use crate::commands::Ctx;
use crate::error::Error;
use crate::output::{self, or_dash, render, table};

/// The `?host=` filter.
#[derive(Serialize)]
struct HostQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
}

/// Runs one `kumo admin quarantine` subcommand.
pub async fn run(ctx: &Ctx, command: QuarantineCommand) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        QuarantineCommand::List { host } => {
            let reply: Reply<Listing<QuarantineEntry>> =
                client.get(&["v1", "admin", "quarantine"], &HostQuery { host }).await?;
            let now = Timestamp::now();
            ctx.show_list(&reply, reply.value.items.is_empty(), "Nothing is quarantined.", |l| entries(&l.items, now))
        }
        QuarantineCommand::Restore { id, host } => {
            let reply: Reply<QuarantineEntry> =
                client.post_query(&["v1", "admin", "quarantine", &id, "restore"], &HostQuery { host }).await?;
            ctx.show(&reply, |e| {
                format!(
                    "Asked host {} to restore {} {} ({}); its agent does so at its next sync.",
                    e.host_name,
                    e.kind.as_str(),
                    e.resource_id,
                    e.id
                )
            })
        }
    }
}

/// The table of `kumo admin quarantine list`.
fn entries(items: &[QuarantineEntry], now: Timestamp) -> String {
    let mut t = table([
        "ID",
        "HOST",
        "KIND",
        "RESOURCE",
        "SIZE",
        "QUARANTINED",
        "CREATED HERE",
        "DELETED AT",
        "LISTED",
        "RESTORE",
    ]);
    for e in items {
        t.add_row([
            e.id.clone(),
            e.host_name.clone(),
            e.kind.as_str().to_owned(),
            e.resource_id.clone(),
            output::bytes(e.size_bytes),
            output::ago(e.quarantined_at, now),
            if e.created_here { "yes" } else { "no" }.to_owned(),
            e.delete_after.map_or_else(|| "never".to_owned(), |t| t.to_string()),
            if e.listed { "yes" } else { "no" }.to_owned(),
            or_dash(e.restore_requested_at.map(|t| format!("asked {}", output::ago(t, now)))),
        ]);
    }
    render(&t)
}
