//! Measured statistics (issue 18): agents' reports through `POST
//! /agent/v1/stats` become a history that `GET /v1/instances/{id}/metrics`
//! shows to the instance's project only and `GET /v1/hosts/{id}/metrics` to
//! admins; the history is bounded. On SQLite and (when configured) PostgreSQL.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use kumo_wire::stats::{DiskCounters, HostSample, InstanceSample, NicCounters, StatsReport};
use kumo_wire::{InstanceId, Timestamp};
use serde_json::{json, Value};

/// One instance's counters: `cpu_s` seconds of CPU, `bytes` read and received.
fn sample(id: &str, cpu_s: u64, bytes: u64) -> InstanceSample {
    InstanceSample {
        id: id.parse().unwrap(),
        vcpus: 1,
        cpu_time_ns: cpu_s * 1_000_000_000,
        memory_kib: 1024 * 1024,
        memory_used_kib: Some(512 * 1024),
        disks: vec![DiskCounters {
            device: "vda".into(),
            read_bytes: bytes,
            write_bytes: 0,
            read_ops: bytes / 1000,
            write_ops: 0,
        }],
        nics: vec![NicCounters {
            device: "ktap1".into(),
            rx_bytes: bytes,
            tx_bytes: bytes / 2,
            rx_packets: bytes / 100,
            tx_packets: 0,
        }],
    }
}

fn host_sample(busy: u64, total: u64) -> HostSample {
    HostSample {
        cpus: 2,
        cpu_busy_ticks: busy,
        cpu_total_ticks: total,
        load1_milli: 750,
        memory_total_kib: 4 << 20,
        memory_available_kib: 3 << 20,
    }
}

async fn report(c: &Cloud, token: Option<&str>, report: &StatsReport) -> (StatusCode, Value) {
    c.call(Method::POST, "/agent/v1/stats", token, Some(serde_json::to_value(report).unwrap())).await
}

/// A tenant's running instance on `agent`'s host.
async fn running(c: &Cloud, agent: &FakeAgent, token: &str, name: &str) -> String {
    let id = c.run(token, name, "small").await["id"].as_str().unwrap().to_owned();
    c.wait_state(token, &id, "building").await;
    agent.converge(c).await;
    c.wait_state(token, &id, "running").await;
    id
}

/// Sum over the points of `rate × covered seconds`: the amount the history holds.
fn total(points: &Value, rate: &str) -> f64 {
    points.as_array().unwrap().iter().map(|p| p[rate].as_f64().unwrap() * p["covered_secs"].as_f64().unwrap()).sum()
}

#[tokio::test]
async fn reports_become_a_history_only_the_instances_project_reads() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        c.kernel_image("tiny").await;
        let acme = c.tenant("acme").await;
        let globex = c.tenant("globex").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let other_host = FakeAgent::register(&c, "host-b", CAPACITY).await;
        let id = running(&c, &agent, &acme, "web").await;

        // Three samples 15 s apart on the agent's clock: 7.5 s of CPU, 3 MB in, then a reset (guest restart).
        let t0 = Timestamp::now().plus_millis(-40_000);
        let rounds =
            [(t0, 100, 1_000_000), (t0.plus_millis(15_000), 107, 2_500_000), (t0.plus_millis(30_000), 1, 500_000)];
        for (at, cpu, bytes) in rounds {
            let r = StatsReport {
                sampled_at: at,
                host: Some(host_sample(cpu * 10, cpu * 100)),
                instances: vec![sample(&id, cpu, bytes)],
            };
            let (s, b) = report(&c, Some(&agent.host_token), &r).await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
        }
        // A report from another host naming this instance changes nothing; nor does one without a host token.
        let forged = StatsReport {
            sampled_at: t0.plus_millis(45_000),
            host: None,
            instances: vec![sample(&id, 999_999, 999_999_999)],
        };
        assert_eq!(report(&c, Some(&other_host.host_token), &forged).await.0, StatusCode::NO_CONTENT);
        assert_eq!(report(&c, None, &forged).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(report(&c, Some("not-a-host-token"), &forged).await.0, StatusCode::UNAUTHORIZED);
        let (s, b) =
            c.call(Method::POST, "/agent/v1/stats", Some(&agent.host_token), Some(json!({"sampled_at": 5}))).await;
        assert!(s.is_client_error(), "a malformed report is refused: {s} {b}");

        let (s, series) = c.get(&format!("/v1/instances/{id}/metrics?since=2h&step=3600"), &acme).await;
        assert_eq!(s, StatusCode::OK, "{series}");
        assert_eq!((series["subject"].as_str(), series["step_secs"].as_u64()), (Some(id.as_str()), Some(3600)));
        let points = &series["points"];
        let covered: f64 = points.as_array().unwrap().iter().map(|p| p["covered_secs"].as_f64().unwrap()).sum();
        assert_eq!(covered, 30.0, "two intervals of 15 s: {series}");
        // 1.5 MB, then after the reset all of the new counter's 0.5 MB.
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
        assert!(close(total(points, "net_rx_bps"), 2_000_000.0), "{series}");
        assert!(close(total(points, "disk_read_bps"), 2_000_000.0), "{series}");
        assert!(close(total(points, "net_tx_bps"), 1_000_000.0), "{series}");
        // 7 s + 1 s of CPU over 30 s of one vCPU.
        let cpu = points[0]["cpu_percent"].as_f64().unwrap();
        if points.as_array().unwrap().len() == 1 {
            assert!((cpu - 800.0 / 30.0).abs() < 1e-9, "{cpu}");
        }
        assert_eq!(points[0]["memory_used_mib"].as_f64(), Some(512.0));
        assert!(points[0].get("load1").is_none(), "instances have no load average");

        // By name too; minute points by default.
        let (s, by_name) = c.get("/v1/instances/web/metrics", &acme).await;
        assert_eq!((s, by_name["step_secs"].as_u64()), (StatusCode::OK, Some(60)), "{by_name}");
        assert!(!by_name["points"].as_array().unwrap().is_empty());

        // Another project sees nothing, by id or name: 404, as for any instance it may not see.
        for key in [id.as_str(), "web"] {
            let (s, b) = c.get(&format!("/v1/instances/{key}/metrics"), &globex).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        }
        let (s, _) = c.get(&format!("/v1/instances/{}/metrics", InstanceId::generate()), &acme).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(
            c.call(Method::GET, &format!("/v1/instances/{id}/metrics"), None, None).await.0,
            StatusCode::UNAUTHORIZED
        );

        // Bad windows are 400 with what is accepted.
        for (query, says) in [
            ("since=yesterday", "neither an RFC 3339 time nor a span"),
            ("step=90", "multiple of 60"),
            ("since=2d&step=60", "minute points are kept 25 hours"),
            ("since=40d", "hour points are kept 32 days"),
            ("since=2099-01-01T00:00:00Z", "is not in the past"),
            ("step=-5", ""),
            ("colour=red", ""),
        ] {
            let (s, b) = c.get(&format!("/v1/instances/{id}/metrics?{query}"), &acme).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {b}");
            assert!(b["message"].as_str().unwrap().contains(says), "{query}: {b}");
        }

        // Hosts: admins only; busy 10 % of the ticks, load and memory as reported.
        let (s, h) = c.get("/v1/hosts/host-a/metrics?since=1h&step=3600", &c.admin).await;
        assert_eq!(s, StatusCode::OK, "{h}");
        let p = &h["points"][0];
        assert_eq!(
            (p["cpu_percent"].as_f64(), p["load1"].as_f64(), p["memory_used_mib"].as_f64()),
            (Some(10.0), Some(0.75), Some(1024.0)),
            "{h}"
        );
        assert_eq!(
            c.get("/v1/hosts/host-b/metrics", &c.admin).await.1["points"],
            json!([]),
            "host-b sent no host sample"
        );
        assert_eq!(c.get("/v1/hosts/host-a/metrics", &acme).await.0, StatusCode::FORBIDDEN);
        assert_eq!(c.get("/v1/hosts/nowhere/metrics", &c.admin).await.0, StatusCode::NOT_FOUND);
        assert_eq!(c.get("/v1/hosts/host-a/metrics?step=7", &c.admin).await.0, StatusCode::BAD_REQUEST);

        // The OpenAPI document describes both reads.
        let (_, doc) = c.get("/v1/openapi.json", &acme).await;
        for path in ["/v1/instances/{id}/metrics", "/v1/hosts/{host}/metrics"] {
            assert!(doc["paths"][path]["get"].is_object(), "{path} is documented");
        }
        assert!(doc["components"]["schemas"]["MetricPoint"].is_object());
    }
}

#[tokio::test]
async fn history_is_downsampled_and_pruned_and_writes_are_cheap() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        c.kernel_image("tiny").await;
        let acme = c.tenant("acme").await;
        let big = kumo_wire::agent::HostCapacity { vcpus: 256, memory_mib: 1 << 20, disk_gib: 100_000 };
        let agent = FakeAgent::register(&c, "host-a", big).await;
        let id = running(&c, &agent, &acme, "web").await;
        let state = &c.controller.state;
        let host: kumo_wire::HostId = agent.host_id.parse().unwrap();
        let now = Timestamp::now();

        // Reports received 40 days, 2 days and 1 hour ago (a pair each, 15 s apart).
        for back_ms in [40 * 86_400_000, 2 * 86_400_000, 3_600_000] {
            for (i, bytes) in [(0, 0), (1, 15_000)] {
                let received = now.plus_millis(-back_ms + i * 15_000);
                let r = StatsReport { sampled_at: received, host: None, instances: vec![sample(&id, 0, bytes)] };
                kumo_api::stats::ingest(state, &host, &r, received).await.unwrap();
            }
        }
        let rows = |step| state.db.stats_points(&id, step, Timestamp(0));
        let count = |rows: Vec<_>| rows.len();
        assert_eq!(
            (count(rows(60).await.unwrap()), count(rows(3600).await.unwrap())),
            (3, 3),
            "a minute row and an hour row per interval"
        );
        let gone = kumo_api::stats::prune(state, now).await.unwrap();
        assert_eq!(gone, 3, "the minute rows of 40 and 2 days ago, the hour row of 40 days ago");
        assert_eq!((count(rows(60).await.unwrap()), count(rows(3600).await.unwrap())), (1, 2));
        // A month back reads hour points; the 2-day-old one is there, the 40-day-old one is not.
        let (s, b) = c.get(&format!("/v1/instances/{id}/metrics?since=30d"), &acme).await;
        assert_eq!((s, b["step_secs"].as_u64()), (StatusCode::OK, Some(3600)), "{b}");
        assert_eq!(b["points"].as_array().unwrap().len(), 2, "{b}");
        assert_eq!(b["points"][0]["net_rx_bps"].as_f64(), Some(1000.0));

        // The cost of one report of 50 instances (figures for the report).
        let mut ids = Vec::new();
        let heartbeat = || {
            let mut req = FakeAgent::request(vec![]);
            req.capacity = big;
            agent.send_sync(&c, req)
        };
        for n in 0..49 {
            if n % 8 == 0 {
                heartbeat().await; // With room for them all, and alive however slow the launches.
            }
            ids.push(c.run(&c.admin, &format!("w{n}"), "mini").await["id"].as_str().unwrap().to_owned());
        }
        c.wait_for(&c.admin, &ids[48], "placed", |i| i["state"] != "pending").await;
        agent.converge(&c).await;
        ids.push(id.clone());
        let placed = state.db.stats_context(&host).await.unwrap().0;
        assert!(ids.iter().all(|i| placed.contains(&i.parse().unwrap())), "all 50 run on host-a");
        let mut timings = Vec::new();
        for round in 0..5i64 {
            let at = now.plus_millis(round * 15_000);
            let r = StatsReport {
                sampled_at: at,
                host: Some(host_sample(0, 0)),
                instances: ids.iter().map(|i| sample(i, 0, 0)).collect(),
            };
            let started = std::time::Instant::now();
            let done = kumo_api::stats::ingest(state, &host, &r, at).await.unwrap();
            timings.push(started.elapsed());
            assert_eq!((done.subjects, done.points, done.refused), (51, if round == 0 { 0 } else { 102 }, 0));
        }
        eprintln!(
            "figure[{backend}]: one report of {} instances + host: {:?} (first report: {:?})",
            ids.len(),
            timings[1..].iter().min().unwrap(),
            timings[0]
        );
    }
}
