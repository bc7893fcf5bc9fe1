//! `kumo snapshot ...`.

use std::time::Duration;

use kumo_wire::api::Listing;
use kumo_wire::storage::{CreateSnapshot, Snapshot, SnapshotState};

use crate::args::{SnapshotCommand, StorageWaitArgs};
use crate::client::{Client, Reply};
use crate::commands::{all_query, fetch_all, Ctx};
use crate::error::Error;
use crate::output;
use crate::render;
use crate::wait::{self, Progress};

/// Runs one `kumo snapshot` subcommand.
pub async fn dispatch(ctx: &Ctx, command: SnapshotCommand) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        SnapshotCommand::Create { name, volume, instance, wait } => {
            let request = CreateSnapshot { name, volume, instance };
            let reply: Reply<Snapshot> = client.post(&["v1", "snapshots"], &request).await?;
            finish(ctx, &client, reply, wait, SnapshotState::Available).await
        }
        SnapshotCommand::List { all } => {
            let listing: Listing<Snapshot> = fetch_all(&client, &["v1", "snapshots"], &all_query(all)).await?;
            ctx.show_listing(&listing, "No snapshots.", render::snapshots)
        }
        SnapshotCommand::Show { snapshot } => {
            let reply: Reply<Snapshot> = client.get(&["v1", "snapshots", &snapshot], &()).await?;
            ctx.show(&reply, render::snapshot)
        }
        SnapshotCommand::Delete { snapshot, wait } => {
            let reply: Reply<Snapshot> = client.delete(&["v1", "snapshots", &snapshot]).await?;
            finish(ctx, &client, reply, wait, SnapshotState::Deleted).await
        }
    }
}

async fn finish(
    ctx: &Ctx,
    client: &Client,
    reply: Reply<Snapshot>,
    wait: StorageWaitArgs,
    target: SnapshotState,
) -> Result<(), Error> {
    if !wait.wait {
        return ctx.show(&reply, render::snapshot);
    }
    let id = reply.value.id.to_string();
    let snapshot = wait::until(
        Duration::from_secs(wait.timeout),
        || async { Ok(client.get::<Snapshot>(&["v1", "snapshots", &id], &()).await?.value) },
        |s: &Snapshot| match s.state {
            state if state == target => Progress::Done,
            SnapshotState::Error => {
                Progress::Failed(s.state_reason.clone().unwrap_or_else(|| "no reason given".into()))
            }
            _ => Progress::Waiting,
        },
        |s: &Snapshot| format!("snapshot {} ({}): {}", s.name, s.id, s.state),
    )
    .await?;
    if ctx.json() {
        output::print_json_value(&snapshot)
    } else {
        output::print(&render::snapshot(&snapshot))
    }
}
