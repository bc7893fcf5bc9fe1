//! `/v1/admin/audit` (admin): the controller's records against what each
//! host's agent reports holding ([`crate::audit`]), and `/repair`, which asks
//! the agents to remove what is safe to remove and audits again.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use kumo_wire::agent::SyncResponse;
use kumo_wire::api::HostStatus;
use kumo_wire::inventory::{AuditReport, AuditedHost, Difference, DifferenceKind, Repair};
use kumo_wire::{HostId, Timestamp};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{compare, unlisted, HostRecords};
use crate::auth::Caller;
use crate::db::hosts::HostRecord;
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::state::AppState;

/// How long an audit waits for a host's fresh inventory.
const FRESH_WAIT: Duration = Duration::from_secs(20);

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit)).routes(routes!(repair))
}

/// Which hosts to audit.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// One host (name or id); all hosts when absent.
    pub host: Option<String>,
    /// Whether to ask the agents for a fresh inventory first (default true).
    pub fresh: Option<bool>,
}

/// Sets the audit's part of a sync answer: the repairs waiting for the host
/// and whether an audit waits for its inventory. True when the agent should
/// get the answer at once (not held by the long poll).
pub async fn for_sync(state: &AppState, host: &HostId, response: &mut SyncResponse) -> ApiResult<bool> {
    response.repairs = state.db.take_repairs(host).await?;
    response.inventory_wanted = state.db.inventory_wanted(host).await?;
    Ok(response.inventory_wanted || !response.repairs.is_empty())
}

/// Compares the controller's records with each host's inventory.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "hosts", params(AuditQuery),
    responses((status = 200, body = AuditReport), (status = 403, body = kumo_wire::ErrorBody), (status = 404, body = kumo_wire::ErrorBody)))]
async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditReport>> {
    caller.require_admin()?;
    let hosts = hosts_of(&state, q.host.as_deref()).await?;
    if q.fresh.unwrap_or(true) {
        refresh(&state, &hosts).await?;
    }
    Ok(Json(report(&state, &hosts).await?))
}

/// Audits, asks the agents to carry out every repair that is safe to do
/// automatically (removing Kumo domains and networks nobody owns; never
/// tenant data), waits for their fresh inventories and audits again.
/// `repaired` lists what was asked; `differences` what is left for a person.
#[utoipa::path(post, path = "/v1/admin/audit/repair", tag = "hosts", params(AuditQuery),
    responses((status = 200, body = AuditReport), (status = 403, body = kumo_wire::ErrorBody), (status = 404, body = kumo_wire::ErrorBody)))]
async fn repair(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditReport>> {
    caller.require_admin()?;
    let hosts = hosts_of(&state, q.host.as_deref()).await?;
    refresh(&state, &hosts).await?;
    let before = report(&state, &hosts).await?;
    let repaired: Vec<Difference> = before.differences.into_iter().filter(|d| d.repair.is_some()).collect();
    let mut asked = Vec::new();
    for h in &hosts {
        let repairs: Vec<Repair> =
            repaired.iter().filter(|d| d.host == h.host.id).filter_map(|d| d.repair.clone()).collect();
        if repairs.is_empty() {
            continue;
        }
        state.db.add_repairs(&h.host.id, &repairs).await?;
        state.hosts.of(&h.host.id).notify_waiters();
        asked.push(h.host.id.clone());
    }
    // Wait until each agent took its repairs and reported the host after them.
    let deadline = tokio::time::Instant::now() + FRESH_WAIT;
    for id in &asked {
        while tokio::time::Instant::now() < deadline
            && (state.db.repairs_pending(id).await? || state.db.inventory_wanted(id).await?)
        {
            state.hosts.of(id).notify_waiters();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut after = report(&state, &hosts).await?;
    after.repaired = repaired;
    Ok(Json(after))
}

async fn hosts_of(state: &AppState, host: Option<&str>) -> ApiResult<Vec<HostRecord>> {
    Ok(match host {
        Some(h) => {
            vec![state.db.find_host(h).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Host, h))?]
        }
        None => state.db.list_hosts().await?,
    })
}

/// Asks every reachable host for an inventory and waits (up to [`FRESH_WAIT`]) for them.
async fn refresh(state: &AppState, hosts: &[HostRecord]) -> ApiResult<()> {
    let now = Timestamp::now();
    let up: Vec<&HostRecord> = hosts.iter().filter(|h| h.host.status == HostStatus::Up).collect();
    for h in &up {
        state.db.want_inventory(&h.host.id, now).await?;
        state.hosts.of(&h.host.id).notify_waiters();
    }
    let deadline = tokio::time::Instant::now() + FRESH_WAIT;
    for h in &up {
        while tokio::time::Instant::now() < deadline && state.db.inventory_wanted(&h.host.id).await? {
            state.hosts.of(&h.host.id).notify_waiters();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn report(state: &AppState, hosts: &[HostRecord]) -> ApiResult<AuditReport> {
    let mut out = AuditReport { hosts: Vec::new(), differences: Vec::new(), repaired: Vec::new() };
    for h in hosts {
        let desired = crate::reconcile::desired_for(state, h).await?;
        let inventory = state.db.inventory(&h.host.id).await?;
        let inv = inventory.as_ref().map(|(inv, _)| inv);
        let owners = match inv {
            Some(inv) => state.db.owners(&unlisted(&desired, inv)).await?,
            None => Default::default(),
        };
        let records = HostRecords { host: h.host.id.clone(), desired, owners };
        out.differences.extend(compare(&records, inv));
        if state.db.inventory_wanted(&h.host.id).await? {
            out.differences.push(Difference {
                host: h.host.id.clone(),
                kind: DifferenceKind::Unaudited,
                resource_type: "inventory".into(),
                resource: h.host.name.clone(),
                project: None,
                detail: "the agent did not send a fresh inventory in time; this audit used its last one".into(),
                fix: "check that the agent runs and reaches the controller".into(),
                repair: None,
            });
        }
        out.hosts.push(AuditedHost {
            id: h.host.id.clone(),
            name: h.host.name.clone(),
            inventory_taken_at: inv.map(|i| i.taken_at),
        });
    }
    Ok(out)
}
