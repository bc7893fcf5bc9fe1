//! `kumo quota ...`.

use kumo_wire::storage::{ProjectQuotas, QuotaDefaults, SetQuotas};

use crate::args::{QuotaCommand, SetQuotaArgs};
use crate::client::Reply;
use crate::commands::Ctx;
use crate::error::Error;
use crate::render;

/// Runs one `kumo quota` subcommand.
pub async fn dispatch(ctx: &Ctx, command: QuotaCommand) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        QuotaCommand::Show { project: None, defaults: true } => {
            let reply: Reply<QuotaDefaults> = client.get(&["v1", "quotas", "defaults"], &()).await?;
            ctx.show(&reply, render::quota_defaults)
        }
        QuotaCommand::Show { project: Some(project), .. } => {
            let reply: Reply<ProjectQuotas> = client.get(&["v1", "projects", &project, "quotas"], &()).await?;
            ctx.show(&reply, render::quotas)
        }
        QuotaCommand::Show { project: None, defaults: false } => {
            let reply: Reply<ProjectQuotas> = client.get(&["v1", "quotas"], &()).await?;
            ctx.show(&reply, render::quotas)
        }
        QuotaCommand::Set(args) => set(ctx, args).await,
    }
}

async fn set(ctx: &Ctx, args: SetQuotaArgs) -> Result<(), Error> {
    let request = SetQuotas {
        instances: args.instances,
        vcpus: args.vcpus,
        ram_mib: args.ram_mib,
        volumes: args.volumes,
        volume_gib: args.volume_gib,
        snapshots: args.snapshots,
        floating_ips: args.floating_ips,
        networks: args.networks,
        vpcs: args.vpcs,
        security_groups: args.security_groups,
        rules_per_group: args.rules_per_group,
        key_pairs: args.key_pairs,
        images: args.images,
        image_gib: args.image_gib,
        reset: args.reset,
    };
    if request.limits().is_empty() && request.reset.is_empty() {
        return Err(Error::Invalid("give at least one limit to set, e.g. --instances 20 (or --reset QUOTA)".into()));
    }
    let client = ctx.client()?;
    match (&args.project, args.defaults) {
        (Some(project), _) => {
            let reply: Reply<ProjectQuotas> = client.put(&["v1", "projects", project, "quotas"], &request).await?;
            ctx.show(&reply, render::quotas)
        }
        (None, _) => {
            let reply: Reply<QuotaDefaults> = client.put(&["v1", "quotas", "defaults"], &request).await?;
            ctx.show(&reply, render::quota_defaults)
        }
    }
}
