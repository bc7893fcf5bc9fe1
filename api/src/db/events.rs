//! The event log: who asked what, when, and what happened, per resource.
//! Billing meters from the `state_changed` events of instances, volumes,
//! snapshots and images.

use kumo_wire::api::Event;
use kumo_wire::{ProjectId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use super::{Db, DbError, DbResult};

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// The owning project, if the resource has one.
    pub project_id: Option<&'a ProjectId>,
    /// `instance`, `image`, ...
    pub resource_type: &'a str,
    /// The resource's id.
    pub resource_id: &'a str,
    /// When it happened.
    pub at: Timestamp,
    /// Who did it.
    pub actor: &'a str,
    /// What happened.
    pub action: &'a str,
    /// Details.
    pub detail: serde_json::Value,
}

/// Appends an event inside an ongoing transaction or on the pool.
pub async fn append<'e, E>(executor: E, event: &NewEvent<'_>) -> DbResult<()>
where
    E: Executor<'e, Database = Any>,
{
    sqlx::query(
        "INSERT INTO events (project_id, resource_type, resource_id, at, actor, action, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.project_id.map(|p| p.as_str().to_owned()))
    .bind(event.resource_type)
    .bind(event.resource_id)
    .bind(event.at.millis())
    .bind(event.actor)
    .bind(event.action)
    .bind(event.detail.to_string())
    .execute(executor)
    .await?;
    Ok(())
}

/// Appends many events in one statement (the rows bound as one JSON parameter, see
/// [`super::json_table`]), in `tx`, in the order given (their ids follow it).
pub async fn append_many(
    tx: &mut sqlx::Transaction<'static, Any>,
    backend: super::Backend,
    events: &[NewEvent<'_>],
) -> DbResult<()> {
    use super::Col::{Int, Text};
    if events.is_empty() {
        return Ok(());
    }
    let columns = [
        ("project_id", Text),
        ("resource_type", Text),
        ("resource_id", Text),
        ("at", Int),
        ("actor", Text),
        ("action", Text),
        ("detail", Text),
    ];
    let sql = format!(
        "INSERT INTO events (project_id, resource_type, resource_id, at, actor, action, detail) \
         SELECT project_id, resource_type, resource_id, at, actor, action, detail FROM ({}) AS c ORDER BY n",
        super::json_table(backend, 1, &columns)
    );
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.project_id.map(ProjectId::as_str),
                e.resource_type,
                e.resource_id,
                e.at.millis(),
                e.actor,
                e.action,
                e.detail.to_string(),
            )
        })
        .collect();
    sqlx::query(&sql).bind(super::json_param(&rows)?).execute(&mut **tx).await?;
    Ok(())
}

/// The columns of an event with its actor's user name (`NULL` for non-user actors).
const SELECT_EVENTS: &str = "SELECT e.id, e.resource_type, e.resource_id, e.at, e.actor, e.action, e.detail, \
     u.name AS actor_name FROM events e LEFT JOIN users u ON u.id = e.actor";

fn event_of(row: &AnyRow) -> DbResult<Event> {
    let detail: String = row.try_get("detail")?;
    Ok(Event {
        id: row.try_get("id")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        at: Timestamp(row.try_get("at")?),
        actor: row.try_get("actor")?,
        actor_name: row.try_get("actor_name")?,
        action: row.try_get("action")?,
        detail: serde_json::from_str(&detail).map_err(|e| DbError::Corrupt(format!("event detail: {e}")))?,
    })
}

impl Db {
    /// Appends one event.
    pub async fn append_event(&self, event: &NewEvent<'_>) -> DbResult<()> {
        append(self.pool(), event).await
    }

    /// A resource's events, oldest first.
    pub async fn events_of(&self, resource_type: &str, resource_id: &str) -> DbResult<Vec<Event>> {
        let rows =
            sqlx::query(&format!("{SELECT_EVENTS} WHERE e.resource_type = $1 AND e.resource_id = $2 ORDER BY e.id"))
                .bind(resource_type)
                .bind(resource_id)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(event_of).collect()
    }

    /// An instance's own events and, interleaved in order, those of the
    /// volumes and floating IPs of `project` whose detail names it (attach,
    /// detach, the volume's life while attached; associate, disassociate).
    pub async fn instance_events(&self, project: &ProjectId, instance: &str) -> DbResult<Vec<Event>> {
        // Details are compact JSON written by serde_json, so the instance appears as `"instance":"i-..."`.
        let named = format!("%\"instance\":\"{instance}\"%");
        let rows = sqlx::query(&format!(
            "{SELECT_EVENTS} WHERE (e.resource_type = 'instance' AND e.resource_id = $1) \
             OR (e.project_id = $2 AND e.resource_type IN ('volume', 'floating_ip') AND e.detail LIKE $3) ORDER BY e.id"
        ))
        .bind(instance)
        .bind(project.as_str())
        .bind(named)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(event_of).collect()
    }
}
