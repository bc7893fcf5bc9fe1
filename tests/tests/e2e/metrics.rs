//! Issue 18: a real Prometheus server (Debian's `prometheus`) scrapes the
//! controller's and the agent's `GET /metrics`; its HTTP API then answers
//! queries for their series. No guest is booted.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kumo_tests::{enabled, free_port, Options, Stack};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// The Prometheus child, ended by its PID when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One instant query; the vector's samples as (labels, value).
fn query(http: &reqwest::blocking::Client, base: &str, q: &str) -> Vec<(Value, f64)> {
    let Ok(resp) = http.get(format!("{base}/api/v1/query")).query(&[("query", q)]).send() else { return Vec::new() };
    let Ok(body) = resp.json::<Value>() else { return Vec::new() };
    assert_eq!(body["status"], "success", "{q}: {body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"].clone(), r["value"][1].as_str().unwrap().parse::<f64>().unwrap()))
        .collect()
}

/// Polls `q` until it returns a sample for which `ok` holds (bounded).
fn wait_for(
    http: &reqwest::blocking::Client,
    base: &str,
    q: &str,
    ok: impl Fn(&Value, f64) -> bool,
) -> Vec<(Value, f64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let samples = query(http, base, q);
        if samples.iter().any(|(m, v)| ok(m, *v)) {
            return samples;
        }
        assert!(Instant::now() < deadline, "Prometheus never had {q}: {samples:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn prometheus_scrapes_the_controller_and_the_agent() {
    if !enabled() {
        return;
    }
    assert!(
        std::path::Path::new(PROMETHEUS).exists(),
        "install Debian's prometheus (scripts/install-system-deps.sh test)"
    );
    let s = Stack::start(Options::default()).unwrap();
    let hosts = s.kumo_json(&["host", "list"]).unwrap();
    let host = hosts["items"].as_array().unwrap().iter().find(|h| h["name"] == s.host_name.as_str()).unwrap();
    let agent_toml = std::fs::read_to_string(s.dir.path().join("agent.toml")).unwrap();
    let agent = agent_toml.parse::<toml::Table>().unwrap()["listen"].as_str().unwrap().to_owned();
    let controller = s.endpoint.trim_start_matches("http://").to_owned();

    // A few API calls, one of them with an id in its path.
    let flavors = s.kumo_json(&["flavor", "list"]).unwrap();
    assert!(flavors["items"].as_array().is_some_and(|f| !f.is_empty()), "{flavors}");
    let host_id = host["id"].as_str().unwrap().to_owned();
    s.kumo_json(&["host", "show", &host_id]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n\
             \x20 - job_name: kumo-controller\n    static_configs:\n      - targets: ['{controller}']\n\
             \x20 - job_name: kumo-agent\n    static_configs:\n      - targets: ['{agent}']\n"
        ),
    )
    .unwrap();
    let port = free_port().unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _prometheus = Prometheus(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    // Both targets are up.
    for job in ["kumo-controller", "kumo-agent"] {
        wait_for(&http, &base, &format!("up{{job=\"{job}\"}}"), |_, v| v == 1.0);
    }
    // Requests by route: the pattern, never the raw id.
    let by_route = wait_for(&http, &base, "kumo_http_requests_total{job=\"kumo-controller\"}", |m, v| {
        m["route"] == "/v1/hosts/{host}" && m["status"] == "200" && v >= 1.0
    });
    assert!(by_route.iter().all(|(m, _)| !m["route"].as_str().unwrap().contains(&host_id)), "{by_route:?}");
    assert!(by_route.iter().any(|(m, _)| m["route"] == "/v1/flavors"), "{by_route:?}");
    let p99 = query(
        &http,
        &base,
        "histogram_quantile(0.99, sum by (le) (rate(kumo_http_request_duration_seconds_bucket[1m])))",
    );
    assert!(p99.iter().all(|(_, v)| v.is_nan() || (0.0..60.0).contains(v)), "{p99:?}");
    // The host's heartbeat is fresh; its agent syncs, and its libvirt calls are timed.
    wait_for(&http, &base, "kumo_host_heartbeat_age_seconds", |m, v| m["host"] == s.host_name.as_str() && v < 30.0);
    wait_for(&http, &base, "kumo_agent_syncs_total{job=\"kumo-agent\"}", |_, v| v >= 1.0);
    wait_for(&http, &base, "kumo_agent_libvirt_call_duration_seconds_count{call=\"list_domains\"}", |m, v| {
        m["outcome"] == "ok" && v >= 1.0
    });
    let managed = wait_for(&http, &base, "kumo_agent_instances", |_, v| v == 0.0);
    assert_eq!(managed.len(), 1, "{managed:?}");
}
