//! `kumo volume ...`.

use std::time::Duration;

use kumo_wire::api::{Event, Listing};
use kumo_wire::storage::{CreateVolume, Volume, VolumeAction, VolumeState};

use crate::args::{StorageWaitArgs, VolumeCommand};
use crate::client::{Client, Reply};
use crate::commands::{all_query, fetch_all, Ctx};
use crate::error::Error;
use crate::output;
use crate::render;
use crate::wait::{self, Progress};

/// Runs one `kumo volume` subcommand.
pub async fn dispatch(ctx: &Ctx, command: VolumeCommand) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        VolumeCommand::Create { name, size, snapshot, backend, attach_to, wait } => {
            let attaching = attach_to.is_some();
            let request = CreateVolume { name, size_gib: size, snapshot, backend, attach_to };
            let reply: Reply<Volume> = client.post(&["v1", "volumes"], &request).await?;
            for warning in &reply.value.warnings {
                output::note(&format!("warning: {warning}"));
            }
            let target: &[VolumeState] = if attaching { &[VolumeState::InUse] } else { &[VolumeState::Available] };
            finish(ctx, &client, reply, wait, target).await
        }
        VolumeCommand::List { all } => {
            let listing: Listing<Volume> = fetch_all(&client, &["v1", "volumes"], &all_query(all)).await?;
            ctx.show_listing(&listing, "No volumes.", render::volumes)
        }
        VolumeCommand::Show { volume } => {
            let reply: Reply<Volume> = client.get(&["v1", "volumes", &volume], &()).await?;
            ctx.show(&reply, render::volume)
        }
        VolumeCommand::Attach { volume, instance, wait } => {
            let action = VolumeAction::Attach { instance };
            let reply: Reply<Volume> = client.post(&["v1", "volumes", &volume, "actions"], &action).await?;
            finish(ctx, &client, reply, wait, &[VolumeState::InUse]).await
        }
        VolumeCommand::Detach { volume, wait } => {
            let reply: Reply<Volume> =
                client.post(&["v1", "volumes", &volume, "actions"], &VolumeAction::Detach).await?;
            finish(ctx, &client, reply, wait, &[VolumeState::Available]).await
        }
        VolumeCommand::Extend { volume, size, wait } => {
            let action = VolumeAction::Extend { size_gib: size };
            let reply: Reply<Volume> = client.post(&["v1", "volumes", &volume, "actions"], &action).await?;
            finish(ctx, &client, reply, wait, &[VolumeState::Available, VolumeState::InUse]).await
        }
        VolumeCommand::Delete { volume, wait } => {
            let reply: Reply<Volume> = client.delete(&["v1", "volumes", &volume]).await?;
            finish(ctx, &client, reply, wait, &[VolumeState::Deleted]).await
        }
        VolumeCommand::Events { volume } => {
            let reply: Reply<Listing<Event>> = client.get(&["v1", "volumes", &volume, "events"], &()).await?;
            ctx.show_list(&reply, reply.value.items.is_empty(), "No events.", |l| render::events(&l.items))
        }
    }
}

/// Shows the answer, or with `--wait` the volume once it reaches one of `targets`.
async fn finish(
    ctx: &Ctx,
    client: &Client,
    reply: Reply<Volume>,
    wait: StorageWaitArgs,
    targets: &[VolumeState],
) -> Result<(), Error> {
    if !wait.wait {
        return ctx.show(&reply, render::volume);
    }
    let id = reply.value.id.to_string();
    let volume = wait::until(
        Duration::from_secs(wait.timeout),
        || async { Ok(client.get::<Volume>(&["v1", "volumes", &id], &()).await?.value) },
        |v: &Volume| judge(v, targets),
        |v: &Volume| format!("volume {} ({}): {}", v.name, v.id, v.state),
    )
    .await?;
    if ctx.json() {
        output::print_json_value(&volume)
    } else {
        output::print(&render::volume(&volume))
    }
}

/// Where a volume stands against the states a command waits for.
pub fn judge(v: &Volume, targets: &[VolumeState]) -> Progress {
    if targets.contains(&v.state) {
        Progress::Done
    } else if v.state == VolumeState::Error {
        Progress::Failed(v.state_reason.clone().unwrap_or_else(|| "no reason given".to_owned()))
    } else {
        Progress::Waiting
    }
}
