//! Flavors, hosts, projects and users: mostly admin commands.

use kumo_wire::api::{CreateFlavor, CreateProject, CreateUser, Flavor, Host, Listing, Project, ProjectSettings, User};
use kumo_wire::billing::PriceListing;
use kumo_wire::Timestamp;

use crate::args::{FlavorCommand, HostCommand, ProjectCommand, UserCommand};
use crate::client::Reply;
use crate::commands::auth::read_password;
use crate::commands::{fetch_all, Ctx};
use crate::error::Error;
use crate::render;

/// Shortest password the controller accepts.
const MIN_PASSWORD_LEN: usize = 8;

/// Runs one `kumo flavor` subcommand.
pub async fn flavor(ctx: &Ctx, command: FlavorCommand) -> Result<(), Error> {
    match command {
        FlavorCommand::List => {
            let client = ctx.client()?;
            let listing: Listing<Flavor> = fetch_all(&client, &["v1", "flavors"], &[]).await?;
            if ctx.json() {
                return ctx.show_listing(&listing, "No flavors.", |_| String::new());
            }
            // The prices in force now, from the price list (`-o json` is the flavor list itself).
            let prices: Reply<PriceListing> = client.get(&["v1", "billing", "prices"], &()).await?;
            let now = Timestamp::now();
            ctx.show_listing(&listing, "No flavors.", |items| render::flavors_priced(items, &prices.value, now))
        }
        FlavorCommand::Create { name, vcpus, memory_mib, disk_gib } => {
            let request = CreateFlavor { name, vcpus, memory_mib, disk_gib };
            let reply: Reply<Flavor> = ctx.client()?.post(&["v1", "flavors"], &request).await?;
            ctx.show(&reply, |f| render::flavors(std::slice::from_ref(f)))
        }
        FlavorCommand::Delete { name } => {
            ctx.client()?.delete_no_content(&["v1", "flavors", &name]).await?;
            ctx.done(&format!("Deleted flavor {name}."))
        }
    }
}

/// Runs one `kumo host` subcommand.
pub async fn host(ctx: &Ctx, command: HostCommand) -> Result<(), Error> {
    let client = ctx.client()?;
    let reply: Reply<Host> = match command {
        HostCommand::List => {
            let listing: Listing<Host> = fetch_all(&client, &["v1", "hosts"], &[]).await?;
            let now = Timestamp::now();
            return ctx.show_listing(&listing, "No hosts.", |items| render::hosts(items, now));
        }
        HostCommand::Show { name } => client.get(&["v1", "hosts", &name], &()).await?,
        HostCommand::Disable { name } => client.post_empty(&["v1", "hosts", &name, "disable"]).await?,
        HostCommand::Enable { name } => client.post_empty(&["v1", "hosts", &name, "enable"]).await?,
        HostCommand::Metrics(args) => {
            return super::instance::metrics(ctx, &["v1", "hosts", &args.id, "metrics"], &args).await;
        }
        HostCommand::ApproveEnrolment { name } => {
            let reply: Reply<Host> = client.post_empty(&["v1", "hosts", &name, "approve-enrolment"]).await?;
            return ctx.show(&reply, |h| {
                format!(
                    "Approved one enrolment of host {} with the join token; its current token no longer works.",
                    h.name
                )
            });
        }
    };
    let now = Timestamp::now();
    ctx.show(&reply, |h| render::host(h, now))
}

/// Runs one `kumo project` subcommand.
pub async fn project(ctx: &Ctx, command: ProjectCommand) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        ProjectCommand::Create { name } => {
            let reply: Reply<Project> = client.post(&["v1", "projects"], &CreateProject { name }).await?;
            ctx.show(&reply, |p| render::projects(std::slice::from_ref(p)))
        }
        ProjectCommand::List => {
            let listing: Listing<Project> = fetch_all(&client, &["v1", "projects"], &[]).await?;
            ctx.show_listing(&listing, "No projects.", render::projects)
        }
        ProjectCommand::Set { name, unique_instance_names } => {
            let settings = ProjectSettings { unique_instance_names };
            let reply: Reply<Project> = client.put(&["v1", "projects", &name, "settings"], &settings).await?;
            ctx.show(&reply, |p| render::projects(std::slice::from_ref(p)))
        }
    }
}

/// Runs one `kumo user` subcommand.
pub async fn user(ctx: &Ctx, command: UserCommand) -> Result<(), Error> {
    match command {
        UserCommand::Create { name, project, role, password } => {
            let client = ctx.client()?;
            let password = read_password(&password, &format!("Password for new user {name}: "))?;
            if password.chars().count() < MIN_PASSWORD_LEN {
                return Err(Error::Invalid(format!("the password must have at least {MIN_PASSWORD_LEN} characters")));
            }
            let request = CreateUser { name, password, project, role };
            let reply: Reply<User> = client.post(&["v1", "users"], &request).await?;
            ctx.show(&reply, |u| render::users(std::slice::from_ref(u)))
        }
        UserCommand::List => {
            let listing: Listing<User> = fetch_all(&ctx.client()?, &["v1", "users"], &[]).await?;
            ctx.show_listing(&listing, "No users.", render::users)
        }
    }
}
