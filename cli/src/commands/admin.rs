//! Flavors, hosts, projects and users: mostly admin commands.

use kumo_wire::api::{CreateFlavor, CreateProject, CreateUser, Flavor, Host, Listing, Project, User};
use kumo_wire::Timestamp;

use crate::args::{FlavorCommand, HostCommand, ProjectCommand, UserCommand};
use crate::client::Reply;
use crate::commands::auth::read_password;
use crate::commands::Ctx;
use crate::error::Error;
use crate::render;

/// Shortest password the controller accepts.
const MIN_PASSWORD_LEN: usize = 8;

/// Runs one `kumo flavor` subcommand.
pub async fn flavor(ctx: &Ctx, command: FlavorCommand) -> Result<(), Error> {
    match command {
        FlavorCommand::List => {
            let reply: Reply<Listing<Flavor>> = ctx.client()?.get(&["v1", "flavors"], &()).await?;
            ctx.show_list(&reply, reply.value.items.is_empty(), "No flavors.", |l| render::flavors(&l.items))
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
            let reply: Reply<Listing<Host>> = client.get(&["v1", "hosts"], &()).await?;
            let now = Timestamp::now();
            return ctx.show_list(&reply, reply.value.items.is_empty(), "No hosts.", |l| render::hosts(&l.items, now));
        }
        HostCommand::Show { name } => client.get(&["v1", "hosts", &name], &()).await?,
        HostCommand::Disable { name } => client.post_empty(&["v1", "hosts", &name, "disable"]).await?,
        HostCommand::Enable { name } => client.post_empty(&["v1", "hosts", &name, "enable"]).await?,
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
            let reply: Reply<Listing<Project>> = client.get(&["v1", "projects"], &()).await?;
            ctx.show_list(&reply, reply.value.items.is_empty(), "No projects.", |l| render::projects(&l.items))
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
            let reply: Reply<Listing<User>> = ctx.client()?.get(&["v1", "users"], &()).await?;
            ctx.show_list(&reply, reply.value.items.is_empty(), "No users.", |l| render::users(&l.items))
        }
    }
}
