//! The lifecycle kernel's guarantees that only the database can give: the
//! state columns take every state of wire's tables and refuse anything else
//! (migration 0025: CHECK constraints on PostgreSQL, triggers on SQLite), and
//! every lifecycle event the kernel logs reads back as wire's typed event.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::StatusCode;
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use kumo_wire::events::{InstanceStateChanged, SnapshotStateChanged, VolumeStateChanged};
use kumo_wire::storage::{SnapshotState, VolumeState};
use kumo_wire::{DesiredPower, InstanceState};
use serde_json::json;
use strum::IntoEnumIterator;

/// Sets `column` of row `id` in `table`; whether the database took it.
async fn set(c: &Cloud, table: &str, column: &str, id: &str, value: &str) -> bool {
    sqlx::query(&format!("UPDATE {table} SET {column} = $1 WHERE id = $2"))
        .bind(value)
        .bind(id)
        .execute(c.controller.state.db.pool())
        .await
        .map(|done| assert_eq!(done.rows_affected(), 1, "{table} {id}"))
        .is_ok()
}

async fn get(c: &Cloud, table: &str, column: &str, id: &str) -> String {
    sqlx::query_scalar(&format!("SELECT {column} FROM {table} WHERE id = $1"))
        .bind(id)
        .fetch_one(c.controller.state.db.pool())
        .await
        .unwrap()
}

/// Every value of `good` is taken, `exploded` and a case variant are refused
/// (the row keeps its value), and the row ends as it began.
async fn column_is_closed(c: &Cloud, table: &str, column: &str, id: &str, good: &[&str]) {
    let before = get(c, table, column, id).await;
    for value in good {
        assert!(set(c, table, column, id, value).await, "{table}.{column} refused {value}");
    }
    assert!(set(c, table, column, id, &before).await);
    for bad in ["exploded", "RUNNING", ""] {
        assert!(!set(c, table, column, id, bad).await, "{table}.{column} took {bad:?}");
        assert_eq!(get(c, table, column, id).await, before, "a refused write changes nothing");
    }
}

#[tokio::test]
async fn state_columns_take_every_state_and_refuse_others() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let inst = c.run(&t, "web", "mini").await;
        let (s, vol) = c.post("/v1/volumes", &t, json!({"name": "data", "size_gib": 1})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{vol}");
        agent.converge_storage(&c, None).await;
        let (s, snap) = c.post("/v1/snapshots", &t, json!({"name": "s1", "volume": "data"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{snap}");

        let states: Vec<&str> = InstanceState::iter().map(InstanceState::as_str).collect();
        column_is_closed(&c, "instances", "state", inst["id"].as_str().unwrap(), &states).await;
        let desired: Vec<&str> = DesiredPower::iter().map(DesiredPower::as_str).collect();
        column_is_closed(&c, "instances", "desired", inst["id"].as_str().unwrap(), &desired).await;
        let states: Vec<&str> = VolumeState::iter().map(VolumeState::as_str).collect();
        column_is_closed(&c, "volumes", "state", vol["id"].as_str().unwrap(), &states).await;
        let states: Vec<&str> = SnapshotState::iter().map(SnapshotState::as_str).collect();
        column_is_closed(&c, "snapshots", "state", snap["id"].as_str().unwrap(), &states).await;
    }
}

/// Every lifecycle event the kernel wrote parses as wire's typed event (billing
/// reads them so), and states that moved are logged as `state_changed`.
#[tokio::test]
async fn the_kernel_logs_typed_events_that_billing_can_read() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let inst = c.run(&t, "web", "mini").await;
        let id = inst["id"].as_str().unwrap().to_owned();
        c.wait_state(&t, &id, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;
        c.post("/v1/volumes", &t, json!({"name": "data", "size_gib": 3})).await;
        agent.converge_storage(&c, None).await;
        c.post("/v1/snapshots", &t, json!({"name": "s1", "volume": "data"})).await;
        agent.converge_storage(&c, None).await;

        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT resource_type, action, detail FROM events \
             WHERE action IN ('state_changed', 'requested') AND resource_type IN ('instance', 'volume', 'snapshot') \
             ORDER BY id",
        )
        .fetch_all(c.controller.state.db.pool())
        .await
        .unwrap();
        let mut seen = Vec::new();
        for (kind, action, detail) in &rows {
            let moved = match kind.as_str() {
                "instance" => {
                    let e: InstanceStateChanged = serde_json::from_str(detail).unwrap();
                    e.from != e.to
                }
                "volume" => {
                    let e: VolumeStateChanged = serde_json::from_str(detail).unwrap();
                    assert_eq!(e.extra.size_gib, 3, "{detail}");
                    e.from != e.to
                }
                _ => {
                    let e: SnapshotStateChanged = serde_json::from_str(detail).unwrap();
                    e.from != e.to
                }
            };
            assert_eq!(moved, action == "state_changed", "{kind} {action} {detail}");
            seen.push(kind.as_str());
        }
        for kind in ["instance", "volume", "snapshot"] {
            assert!(seen.contains(&kind), "no {kind} event in {rows:?}");
        }
    }
}

/// The `api/src` files (path relative to `api/src`, text), for checks on the source.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

/// Only the lifecycle kernel writes a lifecycle state: the one `UPDATE … SET
/// state` per table is its row writer (`db::{instances, volumes,
/// snapshots}::save`, plus `save_many` for the scheduler's batch, which takes
/// its records and events from the kernel's `prepare` and `event_of`), and
/// only the kernel calls them.
#[test]
fn only_the_kernel_writes_lifecycle_states() {
    let mut writers = Vec::new();
    let mut callers = Vec::new();
    for (file, text) in sources() {
        for line in text.lines() {
            for table in ["instances", "volumes", "snapshots"] {
                let update = format!("UPDATE {table} SET");
                let Some(at) = line.find(&update) else { continue };
                let set = line[at + update.len()..].split(" WHERE ").next().unwrap_or_default();
                if set.contains(" state =") {
                    writers.push(file.clone());
                }
            }
            let call = ["instances::save", "volumes::save", "snapshots::save", "save_many(&"];
            if call.iter().any(|c| line.contains(c)) && !line.contains("fn ") {
                callers.push(file.clone());
            }
        }
    }
    writers.sort();
    assert_eq!(writers, ["db/instances.rs", "db/instances.rs", "db/snapshots.rs", "db/volumes.rs"]);
    callers.sort();
    assert_eq!(callers, ["lifecycle/instance.rs", "lifecycle/snapshot.rs", "lifecycle/volume.rs", "scheduler.rs"]);
}
