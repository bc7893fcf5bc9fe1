//! Billing tables: price versions, the append-only ledger (`billing_lines`),
//! meters, the close watermark (`billing_clock`) and closed months.
//!
//! [`Db::close_billing_hour`] closes one hour in one transaction: it first
//! advances the watermark with a compare-and-swap (so a second controller, or
//! a retry, finds the hour closed and does nothing), then loads the inputs of
//! [`kumo_billing::close::plan_close`] and writes its plan. Lines are inserted
//! with `ON CONFLICT DO NOTHING` on their key, the second guarantee against a
//! double charge. A crash before `COMMIT` leaves no trace; the hour is closed
//! again after restart.

use std::collections::{HashMap, HashSet};

use kumo_billing::close::{plan_close, Booked, CloseInput, Line, MeterRow, Recompute, Resource, Totals};
use kumo_billing::invoice::{InvoiceLine, LineKind};
use kumo_billing::usage::{meter_for, Level, Meter, Reading};
use kumo_billing::{Calendar, Currency, ItemKey, PriceList, PriceVersion, Rate};
use kumo_wire::events::{
    FloatingIpState, FloatingIpStateChanged, ImageLogState, ImageStateChanged, InstanceStateChanged,
    SnapshotStateChanged, VolumeStateChanged,
};
use kumo_wire::storage::{SnapshotState, VolumeState};
use kumo_wire::Timestamp;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Backend, Db, DbError, DbResult};

/// How many already-seen event ids each close re-examines for lateness. On
/// PostgreSQL, ids are handed out at insert but become visible at commit, so
/// an event can appear below the cursor of a close that ran while it was
/// committing; the gap is bounded by the number of concurrent writers (the
/// connection pools), far below this. Re-examining a resource that was not
/// late writes nothing.
pub const LATE_MARGIN: i64 = 256;

/// What the billing code needs to know about the cloud's settings.
#[derive(Debug, Clone, Copy)]
pub struct BillingSettings {
    /// Hours, days and months.
    pub calendar: Calendar,
    /// The currency lines are written in.
    pub currency: Currency,
    /// Tax in basis points, recorded per month when it closes.
    pub tax_rate_bp: u32,
}

/// A price version about to be stored.
#[derive(Debug, Clone)]
pub struct NewPriceVersion {
    /// The item.
    pub item: ItemKey,
    /// First second it applies to.
    pub effective_from: i64,
    /// Price per unit-hour.
    pub unit_price: Rate,
    /// Daily cap, minor units.
    pub daily_cap: Option<i64>,
    /// Monthly cap, minor units.
    pub monthly_cap: Option<i64>,
    /// Whether stopped instances are charged.
    pub charge_stopped: bool,
    /// Who created it.
    pub created_by: String,
}

/// A stored price version with when it was made.
#[derive(Debug, Clone)]
pub struct PriceRecord {
    /// The version.
    pub version: PriceVersion,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
}

/// What one close did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseSummary {
    /// The hour closed (start, seconds).
    pub hour: i64,
    /// Lines written (charges and adjustments).
    pub lines: usize,
    /// Of which adjustments.
    pub adjustments: usize,
    /// Meters kept for the next hour.
    pub meters: usize,
}

/// One resource's month so far, summed from the ledger.
#[derive(Debug, Clone)]
pub struct UsageRow {
    /// Resource kind.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: String,
    /// Price item.
    pub item: String,
    /// Hours charged (not counting adjustments).
    pub hours: i64,
    /// Billable seconds.
    pub seconds: i64,
    /// Amount, minor units.
    pub amount: i64,
    /// Before caps.
    pub uncapped: i64,
    /// Lines a cap lowered.
    pub capped_lines: i64,
    /// Charged for usage of the current day.
    pub today: i64,
    /// Its meter now (`gone` when no longer metered).
    pub meter: String,
}

fn ms(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn version_of(row: &AnyRow) -> DbResult<PriceRecord> {
    let item: String = row.try_get("item")?;
    Ok(PriceRecord {
        version: PriceVersion {
            id: row.try_get("id")?,
            item: item.parse().map_err(|e| DbError::Corrupt(format!("price item: {e}")))?,
            effective_from: secs(row.try_get("effective_from")?),
            unit_price: Rate::from_micro(row.try_get("unit_price_micro")?),
            daily_cap: row.try_get("daily_cap")?,
            monthly_cap: row.try_get("monthly_cap")?,
            charge_stopped: row.try_get::<i64, _>("charge_stopped")? != 0,
        },
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

/// The kinds of resource the controller meters: where each one's
/// `state_changed` events join its table, which price item it is charged
/// under, and what meter each event sets. The one place that maps a kind's
/// lifecycle to billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metered {
    /// Per hour of its flavor while running (stopped per the price).
    Instance,
    /// GiB-hours from the agent confirming it until it is deleted, following extends.
    Volume,
    /// GiB-hours while it exists.
    Snapshot,
    /// Private images: GiB-hours of their stored files while not deleted.
    Image,
    /// Floating IPs: per hour from allocation to release. The row is deleted
    /// at release, so the events carry everything (project in `events.project_id`).
    FloatingIp,
}

const METERED: [Metered; 5] =
    [Metered::Instance, Metered::Volume, Metered::Snapshot, Metered::Image, Metered::FloatingIp];

/// `resource_type IN (...)` over every metered kind.
const METERED_TYPES: &str = "('instance', 'volume', 'snapshot', 'image', 'floating_ip')";

impl Metered {
    fn of(kind: &str) -> Option<Self> {
        METERED.into_iter().find(|m| m.kind() == kind)
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Instance => "instance",
            Self::Volume => "volume",
            Self::Snapshot => "snapshot",
            Self::Image => "image",
            Self::FloatingIp => "floating_ip",
        }
    }

    /// The kind's events that may move a meter, each with the resource's
    /// `project_id`, `flavor_name` (instances) and `size_gib` (the table's,
    /// used when the event does not carry one).
    fn events_sql(self) -> &'static str {
        match self {
            Self::Instance => {
                "SELECT e.id, e.resource_id, e.at, e.detail, i.project_id, i.flavor_name, CAST(1 AS BIGINT) AS size_gib \
                 FROM events e JOIN instances i ON i.id = e.resource_id \
                 WHERE e.resource_type = 'instance' AND e.action = 'state_changed'"
            }
            Self::Volume => {
                "SELECT e.id, e.resource_id, e.at, e.detail, v.project_id, '' AS flavor_name, v.size_gib \
                 FROM events e JOIN volumes v ON v.id = e.resource_id \
                 WHERE e.resource_type = 'volume' AND e.action = 'state_changed'"
            }
            Self::Snapshot => {
                "SELECT e.id, e.resource_id, e.at, e.detail, s.project_id, '' AS flavor_name, s.size_gib \
                 FROM events e JOIN snapshots s ON s.id = e.resource_id \
                 WHERE e.resource_type = 'snapshot' AND e.action = 'state_changed'"
            }
            // Images that hold an instance snapshot are charged as the snapshot.
            Self::Image => {
                "SELECT e.id, e.resource_id, e.at, e.detail, m.owner_project_id AS project_id, '' AS flavor_name, \
                 CAST(0 AS BIGINT) AS size_gib FROM events e JOIN images m ON m.id = e.resource_id \
                 WHERE e.resource_type = 'image' AND e.action = 'state_changed' AND m.visibility = 'private' \
                 AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.image_id = m.id)"
            }
            Self::FloatingIp => {
                "SELECT e.id, e.resource_id, e.at, e.detail, e.project_id, '' AS flavor_name, CAST(1 AS BIGINT) AS size_gib \
                 FROM events e WHERE e.resource_type = 'floating_ip' AND e.action = 'state_changed'"
            }
        }
    }

    /// The resource an event row is about.
    fn resource(self, row: &AnyRow) -> DbResult<Resource> {
        let item = match self {
            Self::Instance => {
                let flavor: String = row.try_get("flavor_name")?;
                ItemKey::flavor(&flavor).map_err(|e| DbError::Corrupt(format!("flavor name: {e}")))?
            }
            Self::FloatingIp => "floating-ip".parse().map_err(|e| DbError::Corrupt(format!("price item: {e}")))?,
            other => other.kind().parse().map_err(|e| DbError::Corrupt(format!("price item: {e}")))?,
        };
        Ok(Resource {
            kind: self.kind().into(),
            id: row.try_get("resource_id")?,
            project: row.try_get("project_id")?,
            item,
        })
    }

    /// The meter an event sets (`None`: keeps the previous one), with the
    /// size it carries, if any; every event is read with the type it was
    /// written with (`kumo_wire::events`). Storage follows
    /// the agent like instances do: billed once it confirmed the resource,
    /// held through transitional states (an extend is billed at the new size
    /// once the agent confirms it), gone when deleted.
    fn meter(self, detail: &str) -> DbResult<(Option<Meter>, Option<u64>)> {
        let corrupt = |e: serde_json::Error| DbError::Corrupt(format!("{} event detail: {e}", self.kind()));
        Ok(match self {
            Self::Instance => {
                let event: InstanceStateChanged = serde_json::from_str(detail).map_err(corrupt)?;
                (meter_for(event.to), None)
            }
            Self::Volume => {
                let event: VolumeStateChanged = serde_json::from_str(detail).map_err(corrupt)?;
                let meter = match event.to {
                    VolumeState::Available | VolumeState::InUse => Some(Meter::Running),
                    VolumeState::Deleted => Some(Meter::Gone),
                    // Error keeps the meter: a volume whose extend failed still holds its space.
                    VolumeState::Creating
                    | VolumeState::Attaching
                    | VolumeState::Detaching
                    | VolumeState::Extending
                    | VolumeState::Deleting
                    | VolumeState::Error => None,
                };
                (meter, Some(event.extra.size_gib))
            }
            Self::Snapshot => {
                let event: SnapshotStateChanged = serde_json::from_str(detail).map_err(corrupt)?;
                let meter = match event.to {
                    SnapshotState::Available => Some(Meter::Running),
                    SnapshotState::Deleted => Some(Meter::Gone),
                    SnapshotState::Creating | SnapshotState::Deleting | SnapshotState::Error => None,
                };
                (meter, None)
            }
            Self::Image => {
                let event: ImageStateChanged = serde_json::from_str(detail).map_err(corrupt)?;
                let meter = match event.to {
                    ImageLogState::Active => Some(Meter::Running),
                    ImageLogState::Deleted => Some(Meter::Gone),
                    ImageLogState::Queued => None,
                };
                (meter, Some(event.size_gib))
            }
            Self::FloatingIp => {
                let event: FloatingIpStateChanged = serde_json::from_str(detail).map_err(corrupt)?;
                let meter = match event.to {
                    FloatingIpState::Allocated => Some(Meter::Running),
                    FloatingIpState::Released => Some(Meter::Gone),
                };
                (meter, None)
            }
        })
    }

    /// The meter an event sets, if any, with its quantity (1, or GiB).
    fn reading(self, row: &AnyRow) -> DbResult<Option<Reading>> {
        let detail: String = row.try_get("detail")?;
        let (Some(meter), size) = self.meter(&detail)? else { return Ok(None) };
        let quantity = match (self, size) {
            (Self::Instance | Self::FloatingIp, _) => 1,
            (_, Some(size)) => size,
            (_, None) => super::u64_col(row, "size_gib")?,
        };
        let (at, seq): (i64, i64) = (row.try_get("at")?, row.try_get("id")?);
        Ok(Some(Reading { at: secs(at), seq, meter, quantity }))
    }
}

fn meter_of(row: &AnyRow) -> DbResult<MeterRow> {
    let item: String = row.try_get("item")?;
    let meter: String = row.try_get("meter")?;
    Ok(MeterRow {
        resource: Resource {
            kind: row.try_get("resource_type")?,
            id: row.try_get("resource_id")?,
            project: row.try_get("project_id")?,
            item: item.parse().map_err(|e| DbError::Corrupt(format!("meter item: {e}")))?,
        },
        level: Level { meter: meter.parse().map_err(DbError::Corrupt)?, quantity: super::u64_col(row, "quantity")? },
        totals: Totals {
            day_start: secs(row.try_get("day_start")?),
            day: row.try_get("day_amount")?,
            month_start: secs(row.try_get("month_start")?),
            month: row.try_get("month_amount")?,
            month_exact: row.try_get("month_exact")?,
        },
    })
}

/// The type of a column written by [`bulk_write`].
#[derive(Debug, Clone, Copy)]
enum Col {
    Text,
    Int,
}

/// Writes `rows` (each serializing to a JSON array in `columns` order) in
/// few statements, each backend its fastest way (measured with
/// `benches/billing_close.rs`). SQLite: `INSERT ... SELECT` from one JSON text
/// parameter (`json_each`), because SQLite binds `$N` parameters in time that
/// grows with their count (20,000 rows: 0.09 s at 25 rows per statement, 2.6 s
/// at 1,000). PostgreSQL: multi-row `VALUES` of 200 rows, faster there than
/// casting JSON. (Not `sqlx::QueryBuilder::push_values`: over the `Any`
/// driver it writes `?` placeholders, which PostgreSQL refuses.)
async fn bulk_write<T: serde::Serialize>(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    table: &str,
    columns: &[(&str, Col)],
    rows: &[T],
    on_conflict: &str,
) -> DbResult<()> {
    let names = columns.iter().map(|c| c.0).collect::<Vec<_>>().join(", ");
    let encode = |e: serde_json::Error| DbError::Corrupt(format!("encoding rows: {e}"));
    match backend {
        Backend::Sqlite => {
            let values: Vec<String> = (0..columns.len()).map(|i| format!("value->>{i}")).collect();
            // `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join constraint.
            let sql = format!(
                "INSERT INTO {table} ({names}) SELECT {} FROM json_each($1) WHERE true {on_conflict}",
                values.join(", ")
            );
            for chunk in rows.chunks(10_000) {
                sqlx::query(&sql).bind(serde_json::to_string(chunk).map_err(encode)?).execute(&mut **tx).await?;
            }
        }
        Backend::Postgres => {
            for chunk in rows.chunks(200) {
                let cols = columns.len();
                let tuples: Vec<String> = (0..chunk.len())
                    .map(|r| {
                        let cells: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
                        format!("({})", cells.join(","))
                    })
                    .collect();
                let sql = format!("INSERT INTO {table} ({names}) VALUES {} {on_conflict}", tuples.join(","));
                let mut q = sqlx::query(&sql);
                for row in chunk {
                    let cells = serde_json::to_value(row).map_err(encode)?;
                    for (i, (name, ty)) in columns.iter().enumerate() {
                        let cell = &cells[i];
                        let bad = || DbError::Corrupt(format!("{table}.{name}: {cell}"));
                        q = match ty {
                            Col::Text => q.bind(cell.as_str().ok_or_else(bad)?.to_owned()),
                            Col::Int => q.bind(cell.as_i64().ok_or_else(bad)?),
                        };
                    }
                }
                q.execute(&mut **tx).await?;
            }
        }
    }
    Ok(())
}

const LINE_COLUMNS: [(&str, Col); 15] = [
    ("project_id", Col::Text),
    ("resource_type", Col::Text),
    ("resource_id", Col::Text),
    ("item", Col::Text),
    ("hour", Col::Int),
    ("usage_hour", Col::Int),
    ("seconds", Col::Int),
    ("unit_seconds", Col::Int),
    ("unit_price_micro", Col::Int),
    ("uncapped", Col::Int),
    ("amount", Col::Int),
    ("capped", Col::Int),
    ("price_version_id", Col::Int),
    ("currency", Col::Text),
    ("created_at", Col::Int),
];

async fn insert_lines(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    lines: &[Line],
    currency: Currency,
) -> DbResult<()> {
    let now = Timestamp::now().millis();
    let rows: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                &l.project,
                &l.resource_kind,
                &l.resource_id,
                l.item.as_str(),
                ms(l.hour),
                ms(l.usage_hour),
                l.seconds,
                l.unit_seconds,
                l.unit_price.micro(),
                l.uncapped,
                l.amount,
                i64::from(l.capped),
                l.price_version,
                currency.code(),
                now,
            )
        })
        .collect();
    bulk_write(
        tx,
        backend,
        "billing_lines",
        &LINE_COLUMNS,
        &rows,
        "ON CONFLICT (resource_id, item, hour, usage_hour) DO NOTHING",
    )
    .await
}

const METER_COLUMNS: [(&str, Col); 11] = [
    ("resource_id", Col::Text),
    ("resource_type", Col::Text),
    ("project_id", Col::Text),
    ("item", Col::Text),
    ("meter", Col::Text),
    ("quantity", Col::Int),
    ("day_start", Col::Int),
    ("day_amount", Col::Int),
    ("month_start", Col::Int),
    ("month_amount", Col::Int),
    ("month_exact", Col::Int),
];

async fn upsert_meters(tx: &mut Transaction<'static, Any>, backend: Backend, meters: &[MeterRow]) -> DbResult<()> {
    let rows: Vec<_> = meters
        .iter()
        .map(|m| {
            (
                &m.resource.id,
                &m.resource.kind,
                &m.resource.project,
                m.resource.item.as_str(),
                m.level.meter.as_str(),
                super::i64_of(m.level.quantity),
                ms(m.totals.day_start),
                m.totals.day,
                ms(m.totals.month_start),
                m.totals.month,
                m.totals.month_exact,
            )
        })
        .collect();
    bulk_write(
        tx,
        backend,
        "billing_meters",
        &METER_COLUMNS,
        &rows,
        "ON CONFLICT (resource_id) DO UPDATE SET resource_type = excluded.resource_type, \
         project_id = excluded.project_id, item = excluded.item, meter = excluded.meter, \
         quantity = excluded.quantity, day_start = excluded.day_start, day_amount = excluded.day_amount, \
         month_start = excluded.month_start, month_amount = excluded.month_amount, \
         month_exact = excluded.month_exact",
    )
    .await
}

async fn delete_meters(tx: &mut Transaction<'static, Any>, backend: Backend, gone: &[String]) -> DbResult<()> {
    let sql = match backend {
        Backend::Sqlite => "DELETE FROM billing_meters WHERE resource_id IN (SELECT value FROM json_each($1))",
        Backend::Postgres => {
            "DELETE FROM billing_meters WHERE resource_id IN (SELECT json_array_elements_text(CAST($1 AS JSON)))"
        }
    };
    for chunk in gone.chunks(10_000) {
        let json = serde_json::to_string(chunk).map_err(|e| DbError::Corrupt(format!("encoding ids: {e}")))?;
        sqlx::query(sql).bind(json).execute(&mut **tx).await?;
    }
    Ok(())
}

impl Db {
    /// Every price version, oldest first.
    pub async fn price_versions(&self) -> DbResult<Vec<PriceRecord>> {
        let rows =
            sqlx::query("SELECT * FROM price_versions ORDER BY item, effective_from").fetch_all(self.pool()).await?;
        rows.iter().map(version_of).collect()
    }

    /// The price list.
    pub async fn price_list(&self) -> DbResult<PriceList> {
        Ok(PriceList::new(self.price_versions().await?.into_iter().map(|r| r.version)))
    }

    /// Stores a price version; [`DbError::Duplicate`] when one starts at the same time.
    pub async fn insert_price_version(&self, v: &NewPriceVersion) -> DbResult<PriceRecord> {
        let now = Timestamp::now();
        let row = sqlx::query(
            "INSERT INTO price_versions (item, effective_from, unit_price_micro, daily_cap, monthly_cap, \
             charge_stopped, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(v.item.as_str().to_owned())
        .bind(ms(v.effective_from))
        .bind(v.unit_price.micro())
        .bind(v.daily_cap)
        .bind(v.monthly_cap)
        .bind(i64::from(v.charge_stopped))
        .bind(v.created_by.clone())
        .bind(now.millis())
        .fetch_one(self.pool())
        .await?;
        version_of(&row)
    }

    /// Seeds a version unless the item has one.
    pub async fn seed_price_version(&self, v: &NewPriceVersion) -> DbResult<()> {
        let exists = sqlx::query("SELECT 1 AS one FROM price_versions WHERE item = $1")
            .bind(v.item.as_str().to_owned())
            .fetch_optional(self.pool())
            .await?
            .is_some();
        if !exists {
            match self.insert_price_version(v).await {
                Ok(_) | Err(DbError::Duplicate) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sets the first open hour unless billing has begun (first start).
    pub async fn init_billing_clock(&self, first_hour: i64) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO billing_clock (id, next_open_hour, event_cursor, updated_at) VALUES (1, $1, 0, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ms(first_hour))
        .bind(Timestamp::now().millis())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The first hour not yet closed (seconds), if billing has begun.
    pub async fn next_open_hour(&self) -> DbResult<Option<i64>> {
        let row =
            sqlx::query("SELECT next_open_hour FROM billing_clock WHERE id = 1").fetch_optional(self.pool()).await?;
        row.map(|r| r.try_get::<i64, _>("next_open_hour").map(secs)).transpose().map_err(DbError::from)
    }

    /// Closes `hour` (seconds) if it is the next open hour; `None` when another
    /// closer got there first. Everything happens in one transaction.
    pub async fn close_billing_hour(
        &self,
        hour: i64,
        settings: &BillingSettings,
        prices: &PriceList,
    ) -> DbResult<Option<CloseSummary>> {
        let cal = settings.calendar;
        let end = hour + cal.hour_secs();
        let mut tx = self.begin_write().await?;
        let clock = sqlx::query("SELECT event_cursor FROM billing_clock WHERE id = 1 AND next_open_hour = $1")
            .bind(ms(hour))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(clock) = clock else { return Ok(None) };
        let cursor: i64 = clock.try_get("event_cursor")?;
        let max_id: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) AS max_id FROM events")
            .fetch_one(&mut *tx)
            .await?
            .try_get("max_id")?;
        // The compare-and-swap: on PostgreSQL a concurrent closer waits here
        // for our commit and then matches no row.
        let moved = sqlx::query(
            "UPDATE billing_clock SET next_open_hour = $1, event_cursor = $2, updated_at = $3 \
             WHERE id = 1 AND next_open_hour = $4",
        )
        .bind(ms(end))
        .bind(max_id.max(cursor))
        .bind(Timestamp::now().millis())
        .bind(ms(hour))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(None);
        }

        // Resources with events that may have arrived after their hour closed.
        let late_rows = sqlx::query(&format!(
            "SELECT resource_type, resource_id, MIN(at) AS earliest FROM events WHERE resource_type IN {METERED_TYPES} \
             AND action = 'state_changed' AND id > $1 AND id <= $2 AND at < $3 GROUP BY resource_type, resource_id"
        ))
        .bind(cursor - LATE_MARGIN)
        .bind(max_id)
        .bind(ms(hour))
        .fetch_all(&mut *tx)
        .await?;
        // Each late resource's whole history and what the ledger holds for it, in one query per
        // metered kind and one for the ledger (not two per resource).
        let backend = self.backend();
        let mut earliest: HashMap<String, (Metered, i64)> = HashMap::new();
        for row in &late_rows {
            let kind: String = row.try_get("resource_type")?;
            let Some(metered) = Metered::of(&kind) else { continue };
            let from = cal.month_start(secs(row.try_get("earliest")?));
            earliest.insert(row.try_get("resource_id")?, (metered, from));
        }
        let mut histories: HashMap<String, (Resource, Vec<Reading>)> = HashMap::new();
        for metered in METERED {
            let ids: Vec<&str> =
                earliest.iter().filter(|(_, (m, _))| *m == metered).map(|(id, _)| id.as_str()).collect();
            if ids.is_empty() {
                continue;
            }
            let sql = format!(
                "{} AND e.resource_id IN {} AND e.id <= $2 ORDER BY e.id",
                metered.events_sql(),
                super::json_rows::id_set(backend, 1)
            );
            let rows =
                sqlx::query(&sql).bind(super::json_rows::ids_param(ids)).bind(max_id).fetch_all(&mut *tx).await?;
            for r in &rows {
                let id: String = r.try_get("resource_id")?;
                let entry = match histories.entry(id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert((metered.resource(r)?, Vec::new())),
                };
                entry.1.extend(metered.reading(r)?);
            }
        }
        let mut booked: HashMap<String, Vec<Booked>> = HashMap::new();
        if let Some(first) = earliest.values().map(|(_, from)| *from).min() {
            let sql = format!(
                "SELECT resource_id, usage_hour, CAST(SUM(seconds) AS BIGINT) AS seconds, \
                 CAST(SUM(unit_seconds) AS BIGINT) AS unit_seconds, CAST(SUM(uncapped) AS BIGINT) AS uncapped, \
                 CAST(SUM(amount) AS BIGINT) AS amount FROM billing_lines \
                 WHERE resource_id IN {} AND usage_hour >= $2 AND usage_hour < $3 GROUP BY resource_id, usage_hour",
                super::json_rows::id_set(backend, 1)
            );
            let rows = sqlx::query(&sql)
                .bind(super::json_rows::ids_param(earliest.keys().map(String::as_str)))
                .bind(ms(first))
                .bind(ms(hour))
                .fetch_all(&mut *tx)
                .await?;
            for r in &rows {
                let id: String = r.try_get("resource_id")?;
                let usage_hour = secs(r.try_get("usage_hour")?);
                // Each resource from its own month start, as if asked for it alone.
                if earliest.get(&id).is_some_and(|(_, from)| usage_hour < *from) {
                    continue;
                }
                booked.entry(id).or_default().push(Booked {
                    usage_hour,
                    seconds: r.try_get("seconds")?,
                    unit_seconds: r.try_get("unit_seconds")?,
                    uncapped: r.try_get("uncapped")?,
                    amount: r.try_get("amount")?,
                });
            }
        }
        let mut recompute = Vec::with_capacity(histories.len());
        let mut late: HashSet<String> = HashSet::new();
        for (id, (resource, history)) in histories {
            let Some(&(_, from)) = earliest.get(&id) else { continue };
            let mut booked = booked.remove(&id).unwrap_or_default();
            booked.sort_by_key(|b| b.usage_hour);
            late.insert(id);
            recompute.push(Recompute { resource, history, from, booked });
        }

        let mut meters = Vec::new();
        for row in sqlx::query("SELECT * FROM billing_meters").fetch_all(&mut *tx).await? {
            let m = meter_of(&row)?;
            if !late.contains(&m.resource.id) {
                meters.push(m);
            }
        }
        let mut readings = Vec::new();
        let mut resources: HashMap<String, Resource> = HashMap::new();
        for metered in METERED {
            let window = sqlx::query(&format!("{} AND e.at >= $1 AND e.at < $2 AND e.id <= $3", metered.events_sql()))
                .bind(ms(hour))
                .bind(ms(end))
                .bind(max_id)
                .fetch_all(&mut *tx)
                .await?;
            for row in &window {
                let id: String = row.try_get("resource_id")?;
                if late.contains(&id) {
                    continue;
                }
                let Some(reading) = metered.reading(row)? else { continue };
                let resource = match resources.get(&id) {
                    Some(r) => r.clone(),
                    None => {
                        let r = metered.resource(row)?;
                        resources.insert(id, r.clone());
                        r
                    }
                };
                readings.push((resource, reading));
            }
        }

        let plan = plan_close(CloseInput { calendar: &cal, prices, hour, meters, readings, recompute });
        insert_lines(&mut tx, self.backend(), &plan.lines, settings.currency).await?;
        upsert_meters(&mut tx, self.backend(), &plan.meters).await?;
        delete_meters(&mut tx, self.backend(), &plan.gone).await?;
        if cal.month_of(end) != cal.month_of(hour) {
            sqlx::query(
                "INSERT INTO billing_months (month, currency, tax_rate_bp, closed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (month) DO NOTHING",
            )
            .bind(cal.month_of(hour).to_string())
            .bind(settings.currency.code().to_owned())
            .bind(i64::from(settings.tax_rate_bp))
            .bind(Timestamp::now().millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(CloseSummary {
            hour,
            lines: plan.lines.len(),
            adjustments: plan.lines.iter().filter(|l| l.is_adjustment()).count(),
            meters: plan.meters.len(),
        }))
    }

    /// What closing the open hours of `project` would write, without writing
    /// anything: from the project's meters, each open hour up to and
    /// including `until`'s is planned in memory as the close would plan it
    /// (late events are left to the real close). The current hour is planned
    /// to its end as if nothing changes, so the result is an estimate.
    /// Returns the lines and the meters after the last hour planned.
    pub async fn preview_open_hours(
        &self,
        project: &str,
        until: i64,
        settings: &BillingSettings,
        prices: &PriceList,
    ) -> DbResult<(Vec<Line>, Vec<MeterRow>)> {
        let cal = settings.calendar;
        let Some(mut hour) = self.next_open_hour().await? else { return Ok((Vec::new(), Vec::new())) };
        let mut meters = Vec::new();
        for row in sqlx::query("SELECT * FROM billing_meters WHERE project_id = $1")
            .bind(project)
            .fetch_all(self.pool())
            .await?
        {
            meters.push(meter_of(&row)?);
        }
        let mut lines = Vec::new();
        let last = cal.hour_start(until);
        while hour <= last {
            let end = hour + cal.hour_secs();
            let mut readings = Vec::new();
            for metered in METERED {
                let window = sqlx::query(&format!(
                    "{} AND e.at >= $1 AND e.at < $2 AND e.project_id = $3",
                    metered.events_sql()
                ))
                .bind(ms(hour))
                .bind(ms(end))
                .bind(project)
                .fetch_all(self.pool())
                .await?;
                for row in &window {
                    let Some(reading) = metered.reading(row)? else { continue };
                    let resource = metered.resource(row)?;
                    if resource.project == project {
                        readings.push((resource, reading));
                    }
                }
            }
            let plan = plan_close(CloseInput { calendar: &cal, prices, hour, meters, readings, recompute: Vec::new() });
            lines.extend(plan.lines);
            meters = plan.meters;
            hour = end;
        }
        Ok((lines, meters))
    }

    /// The name of a billed resource (a floating IP's address), if it still exists.
    pub async fn resource_name(&self, kind: &str, id: &str) -> DbResult<Option<String>> {
        let sql = match kind {
            "instance" => "SELECT name FROM instances WHERE id = $1",
            "volume" => "SELECT name FROM volumes WHERE id = $1",
            "snapshot" => "SELECT name FROM snapshots WHERE id = $1",
            "image" => "SELECT name FROM images WHERE id = $1",
            "floating_ip" => "SELECT address AS name FROM floating_ips WHERE id = $1",
            _ => return Ok(None),
        };
        let row = sqlx::query(sql).bind(id).fetch_optional(self.pool()).await?;
        row.map(|r| r.try_get::<String, _>("name")).transpose().map_err(DbError::from)
    }

    /// The currency and tax rate a closed month was closed with.
    pub async fn closed_month(&self, month: &str) -> DbResult<Option<(String, u32)>> {
        let row = sqlx::query("SELECT currency, tax_rate_bp FROM billing_months WHERE month = $1")
            .bind(month)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((r.try_get("currency")?, super::u32_col(&r, "tax_rate_bp")?))).transpose()
    }

    /// A project's lines written in `[from, to)` (seconds), summed per resource
    /// and item, with what was charged for usage since `day_start`.
    pub async fn billing_usage(&self, project: &str, from: i64, to: i64, day_start: i64) -> DbResult<Vec<UsageRow>> {
        let rows = sqlx::query(
            "SELECT l.resource_type, l.resource_id, l.item, \
             CAST(SUM(CASE WHEN l.hour = l.usage_hour THEN 1 ELSE 0 END) AS BIGINT) AS hours, CAST(SUM(l.seconds) AS BIGINT) AS seconds, \
             CAST(SUM(l.amount) AS BIGINT) AS amount, CAST(SUM(l.uncapped) AS BIGINT) AS uncapped, CAST(SUM(l.capped) AS BIGINT) AS capped_lines, \
             CAST(SUM(CASE WHEN l.usage_hour >= $4 THEN l.amount ELSE 0 END) AS BIGINT) AS today, \
             COALESCE(MAX(m.meter), 'gone') AS meter \
             FROM billing_lines l LEFT JOIN billing_meters m ON m.resource_id = l.resource_id \
             WHERE l.project_id = $1 AND l.hour >= $2 AND l.hour < $3 \
             GROUP BY l.resource_type, l.resource_id, l.item ORDER BY l.resource_type, l.resource_id, l.item",
        )
        .bind(project)
        .bind(ms(from))
        .bind(ms(to))
        .bind(ms(day_start))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    resource_type: r.try_get("resource_type")?,
                    resource_id: r.try_get("resource_id")?,
                    item: r.try_get("item")?,
                    hours: r.try_get("hours")?,
                    seconds: r.try_get("seconds")?,
                    amount: r.try_get("amount")?,
                    uncapped: r.try_get("uncapped")?,
                    capped_lines: r.try_get("capped_lines")?,
                    today: r.try_get("today")?,
                    meter: r.try_get("meter")?,
                })
            })
            .collect()
    }

    /// A project's lines written in `[from, to)` (seconds), summed per
    /// resource, item, price and kind: the rows of an invoice.
    pub async fn invoice_lines(&self, project: &str, from: i64, to: i64) -> DbResult<Vec<InvoiceLine>> {
        let rows = sqlx::query(
            "SELECT resource_type, resource_id, item, unit_price_micro, \
             CAST(CASE WHEN hour = usage_hour THEN 0 ELSE 1 END AS BIGINT) AS adjustment, COUNT(*) AS hours, \
             CAST(SUM(capped) AS BIGINT) AS capped_hours, CAST(SUM(seconds) AS BIGINT) AS seconds, CAST(SUM(unit_seconds) AS BIGINT) AS unit_seconds, \
             CAST(SUM(uncapped) AS BIGINT) AS uncapped, CAST(SUM(amount) AS BIGINT) AS amount, MIN(usage_hour) AS first_usage_hour, \
             MAX(usage_hour) AS last_usage_hour FROM billing_lines \
             WHERE project_id = $1 AND hour >= $2 AND hour < $3 \
             GROUP BY resource_type, resource_id, item, unit_price_micro, CASE WHEN hour = usage_hour THEN 0 ELSE 1 END",
        )
        .bind(project)
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let item: String = r.try_get("item")?;
                Ok(InvoiceLine {
                    kind: if r.try_get::<i64, _>("adjustment")? == 0 { LineKind::Charge } else { LineKind::Adjustment },
                    resource_kind: r.try_get("resource_type")?,
                    resource_id: r.try_get("resource_id")?,
                    item: item.parse().map_err(|e| DbError::Corrupt(format!("line item: {e}")))?,
                    unit_price: Rate::from_micro(r.try_get("unit_price_micro")?),
                    hours: super::u64_col(r, "hours")?,
                    capped_hours: super::u64_col(r, "capped_hours")?,
                    seconds: r.try_get("seconds")?,
                    unit_seconds: r.try_get("unit_seconds")?,
                    uncapped: r.try_get("uncapped")?,
                    amount: r.try_get("amount")?,
                    first_usage_hour: secs(r.try_get("first_usage_hour")?),
                    last_usage_hour: secs(r.try_get("last_usage_hour")?),
                })
            })
            .collect()
    }

    /// Every project's total of lines written in `[from, to)` (seconds): `(project id, name, amount, resources)`.
    pub async fn billing_totals_by_project(&self, from: i64, to: i64) -> DbResult<Vec<(String, String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT p.id, p.name, CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) AS amount, COUNT(DISTINCT l.resource_id) AS resources \
             FROM projects p LEFT JOIN billing_lines l ON l.project_id = p.id AND l.hour >= $1 AND l.hour < $2 \
             GROUP BY p.id, p.name ORDER BY p.name",
        )
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?, r.try_get("amount")?, r.try_get("resources")?)))
            .collect()
    }
}
