//! `kumo admin quarantine list|restore` against canned answers (issue 11, item 5).

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kumo_wire::agent::QuarantineKind;
use kumo_wire::api::{Listing, QuarantineEntry};
use kumo_wire::Timestamp;

use crate::fake::{error, unauthorized};
use crate::Env;

const LISTED: &str = "vol-0000000000000000a.1795000000000";
const UNLISTED: &str = "snap-0000000000000000b.1795000000001";

fn entry(id: &str, listed: bool) -> QuarantineEntry {
    let resource = id.split('.').next().expect("resource");
    let kind = if resource.starts_with("snap-") { QuarantineKind::Snapshot } else { QuarantineKind::Volume };
    QuarantineEntry {
        id: id.to_owned(),
        host_id: "host-00000000000000002".parse().expect("id"),
        host_name: "node2".into(),
        kind,
        resource_id: resource.to_owned(),
        size_bytes: 3 * 1024 * 1024,
        quarantined_at: Timestamp(1_795_000_000_000),
        created_here: listed,
        delete_after: listed.then_some(Timestamp(1_795_604_800_000)),
        listed,
        restore_requested_at: None,
    }
}

pub async fn list(headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let items = match q.get("host").map(String::as_str) {
        None | Some("node2") => vec![entry(LISTED, true), entry(UNLISTED, false)],
        Some("node1") => vec![],
        Some(other) => return error(StatusCode::NOT_FOUND, "not_found", &format!("host '{other}' not found")),
    };
    Json(Listing::all(items)).into_response()
}

pub async fn restore(headers: HeaderMap, Path(id): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    if q.get("host").is_some_and(|h| h != "node2") {
        return error(StatusCode::NOT_FOUND, "not_found", &format!("quarantine entry '{id}' not found"));
    }
    match id.as_str() {
        LISTED => (
            StatusCode::ACCEPTED,
            Json(QuarantineEntry { restore_requested_at: Some(Timestamp::now()), ..entry(LISTED, true) }),
        )
            .into_response(),
        UNLISTED => error(
            StatusCode::CONFLICT,
            "conflict",
            "the controller does not list snapshot snap-0000000000000000b on host node2",
        ),
        _ => error(StatusCode::NOT_FOUND, "not_found", &format!("quarantine entry '{id}' not found")),
    }
}

#[test]
fn admin_quarantine_lists_and_restores() {
    let env = Env::logged_in();
    let stdout = env.kumo(&["admin", "quarantine", "list"]).ok().to_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("CREATED HERE") && lines[0].contains("LISTED"), "{stdout}");
    assert!(lines[1].starts_with(LISTED) && lines[1].contains("node2") && lines[1].contains("3.0 MiB"), "{stdout}");
    assert!(lines[2].starts_with(UNLISTED) && lines[2].contains("snapshot") && lines[2].contains("never"), "{stdout}");
    let json = env.kumo(&["admin", "quarantine", "list", "--host", "node2", "-o", "json"]).ok().to_owned();
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["items"][0]["resource_id"], "vol-0000000000000000a");
    let run = env.kumo(&["admin", "quarantine", "list", "--host", "node1"]);
    assert_eq!((run.ok(), run.stderr.as_str()), ("", "Nothing is quarantined.\n"));
    assert_eq!(
        env.kumo(&["admin", "quarantine", "list", "--host", "nope"]).failed(),
        "error: host 'nope' not found (not_found)"
    );

    let out = env.kumo(&["admin", "quarantine", "restore", LISTED]).ok().to_owned();
    assert_eq!(
        out.trim_end(),
        format!(
            "Asked host node2 to restore volume vol-0000000000000000a ({LISTED}); its agent does so at its next sync."
        )
    );
    assert_eq!(
        env.kumo(&["admin", "quarantine", "restore", UNLISTED, "--host", "node2"]).failed(),
        "error: the controller does not list snapshot snap-0000000000000000b on host node2 (conflict)"
    );
    assert_eq!(
        env.kumo(&["admin", "quarantine", "restore", LISTED, "--host", "node1"]).failed(),
        format!("error: quarantine entry '{LISTED}' not found (not_found)")
    );
}
