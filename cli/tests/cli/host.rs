//! `kumo host approve-enrolment` against canned answers (issue 12).

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kumo_wire::api::{Host, HostStatus};
use kumo_wire::Timestamp;

use crate::fake::{error, unauthorized};
use crate::Env;

/// A valid token of a user without the admin role.
const MEMBER_TOKEN: &str = "member-token";

fn node2() -> Host {
    Host {
        id: "host-00000000000000002".parse().expect("id"),
        name: "node2".into(),
        enabled: true,
        status: HostStatus::Up,
        hypervisor: "kvm".into(),
        availability_zone: "az1".into(),
        vcpus: 16,
        memory_mib: 65_536,
        disk_gib: 500,
        used_vcpus: 0,
        used_memory_mib: 0,
        used_disk_gib: 0,
        instances: 0,
        last_heartbeat_at: Some(Timestamp(1_795_000_000_000)),
        unmanaged_domains: vec![],
        allocation_ratios: None,
        clock_skew_ms: None,
    }
}

pub async fn approve_enrolment(headers: HeaderMap, Path(host): Path<String>) -> Response {
    let member = format!("Bearer {MEMBER_TOKEN}");
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(member.as_str()) {
        return error(StatusCode::FORBIDDEN, "forbidden", "this needs the admin role");
    }
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    match host.as_str() {
        "node2" | "host-00000000000000002" => Json(node2()).into_response(),
        other => error(StatusCode::NOT_FOUND, "not_found", &format!("host '{other}' not found")),
    }
}

#[test]
fn host_approve_enrolment_approves_a_known_host_only_for_an_admin() {
    let env = Env::logged_in();
    assert_eq!(
        env.kumo(&["host", "approve-enrolment", "node2"]).ok().trim_end(),
        "Approved one enrolment of host node2 with the join token; its current token no longer works."
    );
    let json = env.kumo(&["host", "approve-enrolment", "node2", "-o", "json"]).ok().to_owned();
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["name"], "node2");
    assert_eq!(env.kumo(&["host", "approve-enrolment", "nope"]).failed(), "error: host 'nope' not found (not_found)");

    let config = std::fs::read_to_string(env.config_path()).expect("config");
    std::fs::write(env.config_path(), config.replace(crate::fake::TOKEN, MEMBER_TOKEN)).expect("write config");
    assert_eq!(
        env.kumo(&["host", "approve-enrolment", "node2"]).failed(),
        "error: this needs the admin role (forbidden)"
    );
}
