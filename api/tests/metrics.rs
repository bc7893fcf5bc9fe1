//! `GET /metrics` (issue 18): the Prometheus text the controller serves, on SQLite
//! and (when configured) PostgreSQL, through the router.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use http_body_util::BodyExt;
use kumo_api::config::ControllerConfig;
use tower::ServiceExt;

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses the text format strictly enough to fail on a malformed line.
fn parse(text: &str) -> Vec<Sample> {
    assert!(text.trim_end().ends_with("# EOF"), "the OpenMetrics text ends with # EOF");
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, HashMap::new()),
        };
        out.push(Sample { name: name.to_owned(), labels, value });
    }
    out
}

async fn scrape(c: &Cloud, peer: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::get("/metrics").body(Body::empty()).unwrap();
    if let Some(peer) = peer {
        req.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    }
    let resp = c.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
}

#[tokio::test]
async fn metrics_count_requests_by_route_placements_states_and_heartbeats() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        agent.sync(&c, vec![]).await;
        let inst = c.run(&t, "web", "mini").await;
        let id = inst["id"].as_str().unwrap().to_owned();
        c.wait_for(&t, &id, "placed", |i| i["state"] != "pending").await;
        let (s, _) = c.get("/v1/instances/no-such-instance", &t).await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        let (s, text) = scrape(&c, None).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        let samples = parse(&text);
        assert!(!text.contains(&id), "a raw instance id became a label:\n{text}");
        assert!(!text.contains("no-such-instance"), "a raw path became a label:\n{text}");
        let route = [("route", "/v1/instances/{id}"), ("method", "GET")];
        let ok = find(&samples, "kumo_http_requests_total", &[route[0], route[1], ("status", "200")]).unwrap();
        assert!(ok.value >= 1.0, "{ok:?}");
        let missing = find(&samples, "kumo_http_requests_total", &[route[0], route[1], ("status", "404")]).unwrap();
        assert_eq!(missing.value, 1.0);
        let launched = find(&samples, "kumo_http_requests_total", &[("route", "/v1/instances"), ("status", "202")]);
        assert_eq!(launched.unwrap().value, 1.0);
        let count = find(&samples, "kumo_http_request_duration_seconds_count", &route).unwrap();
        assert!(count.value >= 2.0, "{count:?}");
        let inf = find(&samples, "kumo_http_request_duration_seconds_bucket", &[route[0], route[1], ("le", "+Inf")]);
        assert_eq!(inf.unwrap().value, count.value);

        assert_eq!(find(&samples, "kumo_scheduler_placements_total", &[]).unwrap().value, 1.0);
        assert_eq!(find(&samples, "kumo_scheduler_placement_failures_total", &[]).unwrap().value, 0.0);
        let states: f64 = samples.iter().filter(|s| s.name == "kumo_instances").map(|s| s.value).sum();
        assert_eq!(states, 1.0, "one instance in some state");
        assert!(find(&samples, "kumo_instances", &[("state", "pending")]).is_none(), "it was placed");
        let age = find(&samples, "kumo_host_heartbeat_age_seconds", &[("host", "host-a")]).unwrap();
        assert!((0.0..60.0).contains(&age.value), "{age:?}");
        assert!(find(&samples, "kumo_billing_hour_closes_total", &[]).is_some());
    }
}

#[tokio::test]
async fn a_launch_no_host_can_take_counts_as_a_placement_failure() {
    let c = cloud("sqlite", |_| {}).await;
    let t = c.tenant("acme").await;
    c.kernel_image("tiny").await;
    let inst = c.run(&t, "web", "mini").await;
    let id = inst["id"].as_str().unwrap().to_owned();
    c.wait_state(&t, &id, "error").await;
    let (_, text) = scrape(&c, None).await;
    let samples = parse(&text);
    assert_eq!(find(&samples, "kumo_scheduler_placement_failures_total", &[]).unwrap().value, 1.0);
    assert_eq!(find(&samples, "kumo_instances", &[("state", "error")]).unwrap().value, 1.0);
}

#[tokio::test]
async fn metrics_can_be_turned_off_or_restricted() {
    let off = cloud("sqlite", |cfg| cfg.metrics = false).await;
    let (s, body) = scrape(&off, Some("127.0.0.1:5000")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("metrics = false"), "{body}");

    let only = cloud("sqlite", |cfg| cfg.metrics_allowed_cidrs = "10.1.0.0/16, 127.0.0.1".into()).await;
    assert_eq!(scrape(&only, Some("127.0.0.1:5000")).await.0, StatusCode::OK);
    assert_eq!(scrape(&only, Some("10.1.2.3:5000")).await.0, StatusCode::OK);
    let (s, body) = scrape(&only, Some("192.0.2.7:5000")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("metrics_allowed_cidrs"), "{body}");
    // An in-process call has no peer address: refused when the list is set.
    assert_eq!(scrape(&only, None).await.0, StatusCode::FORBIDDEN);
}

#[test]
fn a_bad_metrics_allow_list_is_refused_at_load() {
    let err =
        ControllerConfig::load(None, [("KUMO_METRICS_ALLOWED_CIDRS".to_owned(), "10.0.0.0/8, nonsense".to_owned())])
            .unwrap_err();
    assert!(err.to_string().contains("'nonsense' is not an IP range"), "{err}");
    let ok = ControllerConfig::load(None, [("KUMO_METRICS".to_owned(), "false".to_owned())]).unwrap();
    assert!(!ok.metrics);
}
