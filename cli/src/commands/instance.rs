//! `kumo instance ...`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kumo_wire::api::{
    ConsoleOutput, ConsoleQuery, Event, Instance, InstanceAction, InstancePage, ListInstancesQuery, Listing,
    RunInstances, RunInstancesResponse, MAX_NAME_LEN,
};
use kumo_wire::storage::{Volume, VolumeState};
use kumo_wire::InstanceState;

use crate::args::{ActionArgs, ConsoleArgs, InstanceCommand, ListInstancesArgs, RunArgs, WaitArgs};
use crate::client::{Client, Reply};
use crate::commands::Ctx;
use crate::error::Error;
use crate::output;
use crate::render;
use crate::wait::{self, Target};

/// Largest user data the controller accepts (64 KiB).
pub const MAX_USER_DATA_BYTES: u64 = 64 * 1024;

/// How often `console --follow` polls.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Runs one `kumo instance` subcommand.
pub async fn dispatch(ctx: &Ctx, command: InstanceCommand) -> Result<(), Error> {
    match command {
        InstanceCommand::Run(args) => run(ctx, args).await,
        InstanceCommand::List(args) => list(ctx, args).await,
        InstanceCommand::Show { id } => {
            let reply: Reply<Instance> = ctx.client()?.get(&["v1", "instances", &id], &()).await?;
            ctx.show(&reply, render::instance)
        }
        InstanceCommand::Stop(args) => action(ctx, args, InstanceAction::Stop).await,
        InstanceCommand::Start(args) => action(ctx, args, InstanceAction::Start).await,
        InstanceCommand::Reboot(args) => action(ctx, args, InstanceAction::Reboot).await,
        InstanceCommand::Resize { id, flavor } => {
            let body = serde_json::json!({ "flavor": flavor });
            let reply: Reply<Instance> = ctx.client()?.put(&["v1", "instances", &id, "flavor"], &body).await?;
            ctx.show(&reply, render::instance)
        }
        InstanceCommand::Delete(args) => delete(ctx, args).await,
        InstanceCommand::Console(args) => console(ctx, args).await,
        InstanceCommand::Metrics(args) => metrics(ctx, &["v1", "instances", &args.id, "metrics"], &args).await,
        InstanceCommand::Events { id } => {
            let reply: Reply<Listing<Event>> = ctx.client()?.get(&["v1", "instances", &id, "events"], &()).await?;
            ctx.show_list(&reply, reply.value.items.is_empty(), "No events.", |l| render::events(&l.items))
        }
    }
}

async fn run(ctx: &Ctx, args: RunArgs) -> Result<(), Error> {
    check_instance_name(&args.name)?;
    let user_data = match (&args.user_data_file, args.user_data) {
        (Some(path), _) => Some(read_user_data(path)?),
        (None, Some(inline)) => Some(check_user_data_len(inline, "--user-data")?),
        (None, None) => None,
    };
    let volumes = args.volumes.clone();
    let request = RunInstances {
        name: args.name,
        flavor: args.flavor,
        image: args.image,
        key_pair: args.key_pair,
        user_data,
        count: args.count,
        volumes: args.volumes,
        networks: args.networks,
        security_groups: args.security_groups,
        config_drive: args.config_drive,
        unique_name: args.unique_name,
        metadata_options: None,
    };
    let client = ctx.client()?;
    let reply: Reply<RunInstancesResponse> = client.post(&["v1", "instances"], &request).await?;
    for warning in &reply.value.warnings {
        output::note(&format!("warning: {warning}"));
    }
    if !args.wait.wait && !args.wait_ready {
        ctx.show(&reply, |r| render::instances(&r.instances))?;
        if !ctx.json() {
            output::note("Launching; follow with `kumo instance show ID`, or pass --wait next time.");
        }
        return Ok(());
    }
    let deadline = Instant::now() + timeout(args.wait);
    let mut instances = wait::wait_for(&client, reply.value.instances, Target::Running, timeout(args.wait)).await?;
    // Usable means its volumes are attached too, not `attaching`.
    for volume in &volumes {
        wait_attached(&client, volume, deadline).await?;
    }
    if args.wait_ready {
        for instance in &instances {
            wait_ready(&client, instance, deadline).await?;
        }
    }
    if !volumes.is_empty() || args.wait_ready {
        let mut fresh = Vec::with_capacity(instances.len());
        for i in &instances {
            fresh.push(client.get::<Instance>(&["v1", "instances", i.id.as_str()], &()).await?.value);
        }
        instances = fresh;
    }
    if ctx.json() {
        output::print_json_value(&RunInstancesResponse { instances, warnings: reply.value.warnings })
    } else {
        output::print(&render::instances(&instances))
    }
}

/// The line a guest prints on its serial console when it is ready.
pub const READY_MARKER: &str = "KUMO-READY";

/// Waits until `volume` is `in-use` (attached to its new instance).
async fn wait_attached(client: &Client, volume: &str, deadline: Instant) -> Result<(), Error> {
    wait::until(
        deadline.saturating_duration_since(Instant::now()),
        || async { Ok(client.get::<Volume>(&["v1", "volumes", volume], &()).await?.value) },
        |v: &Volume| crate::commands::volume::judge(v, &[VolumeState::InUse]),
        |v: &Volume| format!("volume {} ({}): {} (waiting for in-use)", v.name, v.id, v.state),
    )
    .await
    .map(drop)
}

/// Waits until the guest's console shows [`READY_MARKER`] at the start of a line.
async fn wait_ready(client: &Client, instance: &Instance, deadline: Instant) -> Result<(), Error> {
    let id = instance.id.to_string();
    let query = ConsoleQuery { tail_bytes: Some(1024 * 1024) };
    wait::until(
        deadline.saturating_duration_since(Instant::now()),
        || async {
            let output = match fetch_console(client, &id, &query).await {
                Ok(reply) => reply.value.output,
                // The host cannot serve the log yet (domain just started): nothing printed so far.
                Err(e) if e.status() == Some(reqwest::StatusCode::SERVICE_UNAVAILABLE) => String::new(),
                Err(e) => return Err(e),
            };
            let inst = client.get::<Instance>(&["v1", "instances", &id], &()).await?.value;
            Ok((inst, output))
        },
        |(inst, output): &(Instance, String)| {
            if is_ready(output) {
                wait::Progress::Done
            } else if inst.state == InstanceState::Error {
                wait::Progress::Failed(inst.state_reason.clone().unwrap_or_else(|| "no reason given".into()))
            } else if inst.state != InstanceState::Running {
                wait::Progress::Failed(format!("it is {} instead of booting", inst.state))
            } else {
                wait::Progress::Waiting
            }
        },
        |(inst, _): &(Instance, String)| {
            format!("{} ({}): waiting for {READY_MARKER} on its console", inst.name, inst.id)
        },
    )
    .await
    .map(drop)
}

/// Whether console output holds the ready marker at the start of a line.
pub fn is_ready(output: &str) -> bool {
    output.lines().any(|l| l.trim_start_matches('\r').starts_with(READY_MARKER))
}

async fn list(ctx: &Ctx, args: ListInstancesArgs) -> Result<(), Error> {
    let client = ctx.client()?;
    let mut query = ListInstancesQuery {
        state: args.state,
        name: args.name,
        limit: args.limit,
        after: args.after,
        all: args.all.then_some(true),
    };
    // One page when it is asked for (--limit or --after), else every page.
    let one_page = query.limit.is_some() || query.after.is_some();
    let first: Reply<InstancePage> = client.get(&["v1", "instances"], &query).await?;
    if one_page {
        ctx.show_list(&first, first.value.items.is_empty(), "No instances.", |p| render::instances(&p.items))?;
        if let (Some(next), false) = (&first.value.next, ctx.json()) {
            output::note(&format!("More instances: `kumo instance list --after {next}` for the next page."));
        }
        return Ok(());
    }
    let mut all = first.value.items;
    let mut next = first.value.next;
    while let Some(cursor) = next.take() {
        if query.after.as_deref() == Some(cursor.as_str()) {
            return Err(Error::Invalid(format!("the controller returned the same page cursor twice ({cursor})")));
        }
        query.after = Some(cursor);
        let page: Reply<InstancePage> = client.get(&["v1", "instances"], &query).await?;
        all.extend(page.value.items);
        next = page.value.next;
    }
    ctx.show_listing(&Listing { items: all, next: None }, "No instances.", render::instances)
}

async fn action(ctx: &Ctx, args: ActionArgs, action: InstanceAction) -> Result<(), Error> {
    let client = ctx.client()?;
    let (verb, target) = match action {
        InstanceAction::Stop => ("Stop", Target::Stopped),
        InstanceAction::Start => ("Start", Target::Running),
        InstanceAction::Reboot => ("Reboot", Target::Running),
    };
    let reply: Reply<Instance> = client.post(&["v1", "instances", &args.id, "actions"], &action).await?;
    finish(ctx, &client, reply, verb, target, args.wait).await
}

async fn delete(ctx: &Ctx, args: ActionArgs) -> Result<(), Error> {
    let client = ctx.client()?;
    let reply: Reply<Instance> = client.delete(&["v1", "instances", &args.id]).await?;
    let id = reply.value.id.to_string();
    let deadline = Instant::now() + timeout(args.wait);
    if args.wait.wait {
        // Done means its volumes are free again too (detached as the domain went), ready for reuse.
        let last = wait::wait_for(&client, vec![reply.value.clone()], Target::Deleted, timeout(args.wait)).await?;
        wait::until(
            deadline.saturating_duration_since(Instant::now()),
            || async {
                let all: Listing<Volume> = crate::commands::fetch_all(&client, &["v1", "volumes"], &[]).await?;
                Ok(all
                    .items
                    .into_iter()
                    .filter(|v| v.attached_to.as_ref().map(|a| a.as_str()) == Some(id.as_str()))
                    .count())
            },
            |n: &usize| if *n == 0 { wait::Progress::Done } else { wait::Progress::Waiting },
            |n: &usize| format!("{n} volume(s) still detaching from {id}"),
        )
        .await?;
        return match last.first() {
            Some(i) if ctx.json() => output::print_json_value(i),
            Some(i) => output::print(&format!("{} ({}) is {}.", i.name, i.id, i.state)),
            None => Ok(()),
        };
    }
    finish(ctx, &client, reply, "Delete", Target::Deleted, args.wait).await
}

/// Prints the 202 answer of an action, or waits and prints the final state.
async fn finish(
    ctx: &Ctx,
    client: &Client,
    reply: Reply<Instance>,
    verb: &str,
    target: Target,
    wait: WaitArgs,
) -> Result<(), Error> {
    if !wait.wait {
        return ctx.show(&reply, |i| format!("{verb} requested for {} ({}); it is {}.", i.name, i.id, i.state));
    }
    let last = wait::wait_for(client, vec![reply.value], target, timeout(wait)).await?;
    match last.first() {
        Some(i) if ctx.json() => output::print_json_value(i),
        Some(i) => output::print(&format!("{} ({}) is {}.", i.name, i.id, i.state)),
        None => Ok(()),
    }
}

async fn console(ctx: &Ctx, args: ConsoleArgs) -> Result<(), Error> {
    if args.follow && ctx.json() {
        return Err(Error::Invalid(
            "--follow prints the console as text; it cannot be combined with --output json".into(),
        ));
    }
    let client = ctx.client()?;
    let query = ConsoleQuery { tail_bytes: args.tail_bytes };
    let reply = fetch_console(&client, &args.id, &query).await?;
    if ctx.json() {
        return output::print_json(&reply.raw);
    }
    output::print_raw(&reply.value.output)?;
    if reply.value.output.is_empty() {
        output::note(&no_output_yet(&client, &args.id, args.follow).await);
    }
    if !args.follow {
        return Ok(());
    }
    let mut previous = reply.value.output;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
        let current = fetch_console(&client, &args.id, &query).await?.value.output;
        output::print_raw(new_output(&previous, &current))?;
        previous = current;
    }
}

async fn fetch_console(client: &Client, id: &str, query: &ConsoleQuery) -> Result<Reply<ConsoleOutput>, Error> {
    client.get(&["v1", "instances", id, "console"], query).await
}

/// What to say when the console is empty: the guest has printed nothing yet.
async fn no_output_yet(client: &Client, id: &str, follow: bool) -> String {
    let state = match client.get::<Instance>(&["v1", "instances", id], &()).await {
        Ok(reply) => format!("{} is {}", reply.value.name, reply.value.state),
        Err(_) => "the instance".to_owned(),
    };
    let hint = if follow { "waiting for it" } else { "try again in a few seconds, or follow it with --follow" };
    format!("(no console output yet: {state} and its guest has printed nothing so far; {hint})")
}

/// The part of `current` (a tail of the console log) that `previous` (an
/// earlier tail) did not show: whatever follows the longest end of
/// `previous` that `current` starts with. If they do not overlap (the log was
/// reset, or grew by more than a whole tail), all of `current` is new.
pub fn new_output<'a>(previous: &str, current: &'a str) -> &'a str {
    let overlap = suffix_prefix_overlap(previous.as_bytes(), current.as_bytes());
    if current.is_char_boundary(overlap) {
        &current[overlap..]
    } else {
        current
    }
}

/// The length of the longest suffix of `text` that is a prefix of
/// `pattern`, in linear time (Knuth-Morris-Pratt).
fn suffix_prefix_overlap(text: &[u8], pattern: &[u8]) -> usize {
    if pattern.is_empty() {
        return 0;
    }
    // failure[i]: length of the longest proper border of pattern[..=i].
    let mut failure = vec![0usize; pattern.len()];
    let mut k = 0;
    for i in 1..pattern.len() {
        while k > 0 && pattern[i] != pattern[k] {
            k = failure[k - 1];
        }
        if pattern[i] == pattern[k] {
            k += 1;
        }
        failure[i] = k;
    }
    let mut matched = 0;
    for &byte in text {
        if matched == pattern.len() {
            matched = failure[matched - 1];
        }
        while matched > 0 && byte != pattern[matched] {
            matched = failure[matched - 1];
        }
        if byte == pattern[matched] {
            matched += 1;
        }
    }
    matched
}

fn timeout(wait: WaitArgs) -> Duration {
    Duration::from_secs(wait.timeout)
}

/// The rule from [`RunInstances::name`]: 1-63 of `a-z0-9-`, starting with a letter.
fn check_instance_name(name: &str) -> Result<(), Error> {
    let ok = name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid instance name '{name}' (1-{MAX_NAME_LEN} lowercase letters, digits and '-', starting with a letter)"
        )))
    }
}

fn read_user_data(path: &Path) -> Result<String, Error> {
    let read_err = |source| Error::Read { path: path.to_owned(), source };
    let meta = fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!("user data file {} is not a regular file", path.display())));
    }
    if meta.len() > MAX_USER_DATA_BYTES {
        return Err(too_big(&format!("user data file {}", path.display()), meta.len()));
    }
    let bytes = fs::read(path).map_err(read_err)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Invalid(format!("user data file {} is not UTF-8 text", path.display())))?;
    check_user_data_len(text, &format!("user data file {}", path.display()))
}

fn check_user_data_len(text: String, what: &str) -> Result<String, Error> {
    if text.len() as u64 > MAX_USER_DATA_BYTES {
        return Err(too_big(what, text.len() as u64));
    }
    Ok(text)
}

fn too_big(what: &str, len: u64) -> Error {
    Error::Invalid(format!("{what} is {len} bytes; user data is limited to {MAX_USER_DATA_BYTES} bytes (64 KiB)"))
}

/// `kumo instance metrics` and `kumo host metrics`: the history at `path`.
pub(crate) async fn metrics(ctx: &Ctx, path: &[&str], args: &crate::args::MetricsArgs) -> Result<(), Error> {
    let query = kumo_wire::stats::MetricsQuery { since: Some(args.since.clone()), step: args.step };
    let reply: Reply<kumo_wire::stats::MetricsSeries> = ctx.client()?.get(path, &query).await?;
    if !ctx.json() && reply.value.points.is_empty() {
        output::note(&format!(
            "No measurements since {}: statistics arrive from the host's agent every few seconds while {} runs.",
            reply.value.since, args.id
        ));
        return Ok(());
    }
    ctx.show(&reply, |s| crate::metrics_view::metrics(s, args.rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_growth_without_truncation() {
        assert_eq!(new_output("boot\nlogin: ", "boot\nlogin: root\n"), "root\n");
        assert_eq!(new_output("same", "same"), "");
        assert_eq!(new_output("", "first"), "first");
    }

    #[test]
    fn console_window_that_slid() {
        let previous = "abcdefgh";
        let current = "defghijk";
        assert_eq!(new_output(previous, current), "ijk");
    }

    #[test]
    fn console_reset_shows_everything() {
        assert_eq!(new_output("old log line\n", "fresh boot\n"), "fresh boot\n");
    }

    #[test]
    fn console_overlap_with_multibyte_text() {
        let previous = format!("{}é", "x".repeat(2000));
        let current = format!("{}é!", "x".repeat(1500));
        assert_eq!(new_output(&previous, &current), "!");
        assert_eq!(new_output("ab", "abab"), "ab");
        assert_eq!(new_output("aaaa", "aaab"), "b");
    }

    #[test]
    fn instance_names() {
        assert!(check_instance_name("web-1").is_ok());
        for bad in ["", "1web", "Web", "web_1", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert!(check_instance_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn user_data_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = dir.path().join("ok.sh");
        fs::write(&ok, "#!/bin/sh\necho hi\n").expect("write");
        assert_eq!(read_user_data(&ok).expect("ok"), "#!/bin/sh\necho hi\n");

        let big = dir.path().join("big.sh");
        fs::write(&big, vec![b'x'; 64 * 1024 + 1]).expect("write");
        let err = crate::error::error_line(&read_user_data(&big).expect_err("too big"));
        assert!(err.ends_with("is 65537 bytes; user data is limited to 65536 bytes (64 KiB)"), "{err}");

        let missing = crate::error::error_line(&read_user_data(&dir.path().join("nope")).expect_err("missing"));
        assert!(missing.starts_with("error: cannot read "), "{missing}");
        assert!(read_user_data(dir.path()).is_err(), "a folder was accepted");
        assert!(check_user_data_len("x".repeat(65_537), "--user-data").is_err());
    }
}
