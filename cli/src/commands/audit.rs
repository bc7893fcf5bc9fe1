//! `kumo admin audit [--host H] [--repair]`: the controller's records against
//! what the hosts hold. Exits 1 when any difference is found.

use kumo_wire::inventory::{AuditReport, Difference};
use serde::Serialize;

use crate::client::Reply;
use crate::commands::Ctx;
use crate::error::Error;

#[derive(Serialize)]
struct Query<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
}

/// Runs the audit (and with `repair` the repairs); `Err(AuditDifferences)` when anything differs.
pub async fn audit(ctx: &Ctx, host: Option<String>, repair: bool) -> Result<(), Error> {
    let client = ctx.client()?;
    let query = Query { host: host.as_deref() };
    let reply: Reply<AuditReport> = if repair {
        client.post_query(&["v1", "admin", "audit", "repair"], &query).await?
    } else {
        client.get(&["v1", "admin", "audit"], &query).await?
    };
    ctx.show(&reply, render)?;
    match reply.value.differences.len() {
        0 => Ok(()),
        n => Err(Error::AuditDifferences(n)),
    }
}

/// The report as text: the repairs asked for, then what differs.
pub fn render(r: &AuditReport) -> String {
    let mut out = String::new();
    if !r.repaired.is_empty() {
        out.push_str("REPAIRED:\n");
        for d in &r.repaired {
            out.push_str(&format!("  {}\n", line(d)));
        }
    }
    let hosts: Vec<&str> = r.hosts.iter().map(|h| h.name.as_str()).collect();
    if r.differences.is_empty() {
        out.push_str(&format!("No differences on {} host(s): {}.", hosts.len(), hosts.join(", ")));
        return out;
    }
    out.push_str(&format!("{} difference(s) on {} host(s)", r.differences.len(), hosts.len()));
    if !r.repaired.is_empty() {
        out.push_str(" (left for a person)");
    }
    out.push_str(":\n");
    for d in &r.differences {
        out.push_str(&format!("  {}\n    fix: {}\n", line(d), d.fix));
    }
    out.trim_end().to_owned()
}

fn line(d: &Difference) -> String {
    format!(
        "{} {} {} {} (project {}, host {}): {}",
        d.kind.as_str(),
        d.resource_type,
        d.resource,
        if d.repair.is_some() { "[auto]" } else { "[manual]" },
        d.project.as_deref().unwrap_or("-"),
        d.host,
        d.detail
    )
}
