//! What agents notice about instances (a forced reset, a guest without its
//! DHCP lease) becomes one event of the instance, visible to its project
//! (issue 11, items 6 and 8), on SQLite and (when configured) PostgreSQL.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use kumo_wire::agent::{
    InstanceNotice, NOTICE_FIREWALL_ISOLATED, NOTICE_FIREWALL_RESTORED, NOTICE_FORCED_RESET, NOTICE_NO_DHCP_LEASE,
};
use kumo_wire::Timestamp;
use serde_json::{json, Value};

async fn sync_notices(c: &Cloud, agent: &FakeAgent, notices: Vec<InstanceNotice>) {
    let req = json!({
        "observed": [], "unmanaged_domains": [], "capacity": CAPACITY, "known_revision": null, "wait_ms": 0,
        "notices": notices,
    });
    let (s, b) = c.call(Method::POST, "/agent/v1/sync", Some(&agent.host_token), Some(req)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

fn notice(id: &str, action: &str, key: &str, message: &str) -> InstanceNotice {
    InstanceNotice {
        instance: id.parse().unwrap(),
        key: key.into(),
        action: action.into(),
        message: message.into(),
        at: Timestamp::now(),
    }
}

fn with_action<'a>(events: &'a Value, action: &str) -> Vec<&'a Value> {
    events["items"].as_array().unwrap().iter().filter(|e| e["action"] == action).collect()
}

#[tokio::test]
async fn a_forced_reset_and_a_missing_lease_become_events_once() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let other = c.tenant("other").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let id = c.run(&t, "web", "mini").await["id"].as_str().unwrap().to_owned();
        c.wait_state(&t, &id, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;

        let reset = notice(
            &id,
            NOTICE_FORCED_RESET,
            "forced_reset:3",
            "forced reset because the guest ignored the ACPI request after 60 s",
        );
        let lease = notice(
            &id,
            NOTICE_NO_DHCP_LEASE,
            "no_dhcp_lease:eni-1:3",
            "the guest has run for 300 s without taking its DHCP lease",
        );
        sync_notices(&c, &agent, vec![reset.clone(), lease.clone()]).await;
        // Resent (the agent did not hear the answer): still recorded once.
        sync_notices(&c, &agent, vec![reset.clone()]).await;
        let (s, events) = c.get(&format!("/v1/instances/{id}/events"), &t).await;
        assert_eq!(s, StatusCode::OK);
        let resets = with_action(&events, "forced_reset");
        assert_eq!(resets.len(), 1, "{events:#}");
        assert_eq!(resets[0]["detail"]["message"], reset.message);
        assert_eq!(resets[0]["actor"], "agent:host-a");
        assert_eq!(with_action(&events, "no_dhcp_lease").len(), 1, "{events:#}");
        // A later occurrence (another key) is a new event.
        sync_notices(&c, &agent, vec![notice(&id, NOTICE_FORCED_RESET, "forced_reset:5", "again")]).await;
        let (_, events) = c.get(&format!("/v1/instances/{id}/events"), &t).await;
        assert_eq!(with_action(&events, "forced_reset").len(), 2);

        // Another host's agent, unknown kinds and unknown instances are ignored.
        let stranger = FakeAgent::register(&c, "host-b", CAPACITY).await;
        sync_notices(&c, &stranger, vec![notice(&id, NOTICE_FORCED_RESET, "forced_reset:9", "not yours")]).await;
        sync_notices(&c, &agent, vec![notice(&id, "state_changed", "x", "forged")]).await;
        sync_notices(&c, &agent, vec![notice("i-000000000000000ff", NOTICE_FORCED_RESET, "forced_reset:1", "nobody")])
            .await;
        let (_, events) = c.get(&format!("/v1/instances/{id}/events"), &t).await;
        assert_eq!(with_action(&events, "forced_reset").len(), 2, "{events:#}");
        assert!(!events["items"].as_array().unwrap().iter().any(|e| e["detail"]["message"] == "forged"));
        // The instance's state is untouched, and another project sees nothing.
        let (_, inst) = c.get(&format!("/v1/instances/{id}"), &t).await;
        assert_eq!(inst["state"], "running");
        let (s, _) = c.get(&format!("/v1/instances/{id}/events"), &other).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}

/// Issue 12 item 4: a port the agent cut off (its firewall rules cannot be
/// applied) is told to the instance's users, with the reason, and so is its
/// restoration; `GET /v1/instances/{id}` says why the network is cut off meanwhile.
#[tokio::test]
async fn a_port_cut_off_by_its_firewall_is_told_with_its_reason_until_restored() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let id = c.run(&t, "web", "mini").await["id"].as_str().unwrap().to_owned();
        c.wait_state(&t, &id, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;
        let (_, inst) = c.get(&format!("/v1/instances/{id}"), &t).await;
        assert!(inst.get("network_cut_off").is_none(), "{inst:#}");

        let why = "network cut off: the firewall rules of port eni-1 cannot be applied on its host: nft: Error: \
                   Could not process rule";
        sync_notices(&c, &agent, vec![notice(&id, NOTICE_FIREWALL_ISOLATED, "firewall_isolated:eni-1:100", why)]).await;
        let (_, events) = c.get(&format!("/v1/instances/{id}/events"), &t).await;
        let isolated = with_action(&events, "firewall_isolated");
        assert_eq!(isolated.len(), 1, "{events:#}");
        assert_eq!(isolated[0]["detail"]["message"], why);
        assert_eq!(isolated[0]["actor"], "agent:host-a");
        let (_, inst) = c.get(&format!("/v1/instances/{id}"), &t).await;
        assert_eq!(inst["network_cut_off"], why, "{inst:#}");
        // The instance keeps running: only its network is cut off.
        assert_eq!(inst["state"], "running");

        let back = "network no longer cut off: the firewall rules of port eni-1 apply again";
        sync_notices(&c, &agent, vec![notice(&id, NOTICE_FIREWALL_RESTORED, "firewall_restored:eni-1:200", back)])
            .await;
        let (_, events) = c.get(&format!("/v1/instances/{id}/events"), &t).await;
        assert_eq!(with_action(&events, "firewall_restored").len(), 1, "{events:#}");
        let (_, inst) = c.get(&format!("/v1/instances/{id}"), &t).await;
        assert!(inst.get("network_cut_off").is_none(), "{inst:#}");

        // An old agent's sync (no notices field at all) is still accepted.
        let req = json!({"observed": [], "unmanaged_domains": [], "capacity": CAPACITY, "known_revision": null,
            "wait_ms": 0});
        let (s, b) = c.call(Method::POST, "/agent/v1/sync", Some(&agent.host_token), Some(req)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}
