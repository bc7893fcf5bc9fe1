//! instance run --wait, show, list and API errors.

use std::time::{Duration, Instant};

use crate::fake::{DOOMED, DOOMED_REASON};
use crate::Env;

#[test]
fn run_wait_polls_until_every_instance_runs() {
    let env = Env::logged_in();
    let started = Instant::now();
    let out = env.kumo(&["instance", "run", "--flavor", "small", "--count", "2", "--wait", "--timeout", "30", "web"]);
    let stdout = out.ok();
    // Three polls per instance, 0.5 s apart.
    assert!(started.elapsed() >= Duration::from_millis(1000), "did not poll: {:?}", started.elapsed());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("ID "), "{stdout}");
    for (line, name) in lines[1..].iter().zip(["web-1", "web-2"]) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cols[1..5], [name, "running", "small", "node2"], "{stdout}");
    }
    let seen = env.fake.seen();
    assert_eq!(seen.run_requests.len(), 1);
    assert_eq!(seen.run_requests[0].count, Some(2));
    assert!(seen.instances.iter().all(|(_, polls)| *polls >= 3), "{:?}", seen.instances);
}

#[test]
fn run_wait_stops_at_error_with_the_reason() {
    let env = Env::logged_in();
    let out = env.kumo(&["instance", "run", "--flavor", "small", "--wait", DOOMED]);
    let line = out.failed();
    assert!(line.starts_with("error: instance doomed (i-"), "{line}");
    assert!(line.ends_with(&format!(") went to error: {DOOMED_REASON}")), "{line}");
}

#[test]
fn api_errors_are_one_line_and_exit_1() {
    let env = Env::logged_in();
    let out = env.kumo(&["instance", "show", "i-00000000000000000"]);
    assert_eq!(out.failed(), "error: instance i-00000000000000000 not found (not_found)");
    assert!(out.stdout.is_empty());

    let out = env.kumo(&["instance", "run", "--flavor", "huge", "web"]);
    assert_eq!(out.failed(), "error: flavor 'huge' does not exist (invalid_request)");
}

#[test]
fn user_data_is_checked_before_calling_the_controller() {
    let env = Env::logged_in();
    let big = env.path("big.sh");
    std::fs::write(&big, vec![b'#'; 64 * 1024 + 1]).expect("write");
    let out =
        env.kumo(&["instance", "run", "--flavor", "small", "--user-data-file", big.to_str().expect("utf-8"), "web"]);
    assert!(out.failed().contains("user data is limited to 65536 bytes"), "{out:#?}");
    assert!(env.fake.seen().run_requests.is_empty());

    let script = env.path("ok.sh");
    std::fs::write(&script, "#!/bin/sh\necho hello\n").expect("write");
    env.kumo(&["instance", "run", "--flavor", "small", "--user-data-file", script.to_str().expect("utf-8"), "web"])
        .ok();
    assert_eq!(env.fake.seen().run_requests[0].user_data.as_deref(), Some("#!/bin/sh\necho hello\n"));
}

#[test]
fn show_prints_placement_and_json_prints_the_body() {
    let env = Env::logged_in();
    let out = env.kumo(&["-o", "json", "instance", "run", "--flavor", "small", "db"]);
    let body: serde_json::Value = serde_json::from_str(out.ok()).expect("json");
    let id = body["instances"][0]["id"].as_str().expect("id").to_owned();

    let shown = env.kumo(&["instance", "show", &id]);
    let text = shown.ok();
    assert!(text.contains("STATE:        building"), "{text}");
    assert!(text.contains("PLACEMENT: node2 (strategy spread, decided "), "{text}");
    assert!(text.contains("node1  rejected  disabled"), "{text}");
    assert!(text.contains("node2  accepted  weight 1.00"), "{text}");

    let json = env.kumo(&["instance", "show", &id, "--output", "json"]);
    let body: serde_json::Value = serde_json::from_str(json.ok()).expect("json");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["placement"]["verdicts"][1]["host"], "node2");
    assert!(json.stdout.starts_with("{\n  \"id\": "), "not pretty: {}", json.stdout);
}

#[test]
fn list_all_follows_every_page() {
    let env = Env::logged_in();
    env.kumo(&["instance", "run", "--flavor", "small", "--count", "5", "web"]).ok();

    let first = env.kumo(&["instance", "list"]);
    assert_eq!(first.ok().lines().count(), 3, "{first:#?}");
    assert!(first.stderr.contains("kumo instance list --after 2"), "{first:#?}");

    let all = env.kumo(&["instance", "list", "--all"]);
    assert_eq!(all.ok().lines().count(), 6, "{all:#?}");

    let json = env.kumo(&["instance", "list", "--all", "-o", "json"]);
    let body: serde_json::Value = serde_json::from_str(json.ok()).expect("json");
    assert_eq!(body["instances"].as_array().map(Vec::len), Some(5));
    assert!(body["next"].is_null());
}
