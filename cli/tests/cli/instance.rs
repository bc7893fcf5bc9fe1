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
    assert_eq!(out.failed(), "error: instance 'i-00000000000000000' not found (not_found)");
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
fn list_follows_every_page_unless_one_is_asked_for() {
    let env = Env::logged_in();
    env.kumo(&["instance", "run", "--flavor", "small", "--count", "5", "web"]).ok();

    let page = env.kumo(&["instance", "list", "--limit", "2"]);
    assert_eq!(page.ok().lines().count(), 3, "{page:#?}");
    assert!(page.stderr.contains("kumo instance list --after 2"), "{page:#?}");

    // The fake pages by two: without --limit the CLI follows `next` to the end.
    let all = env.kumo(&["instance", "list"]);
    assert_eq!(all.ok().lines().count(), 6, "{all:#?}");
}

/// The one list envelope: `{"items": [...], "next": null}` for instances as for every other list.
#[test]
fn list_json_is_the_one_envelope() {
    let env = Env::logged_in();
    env.kumo(&["instance", "run", "--flavor", "small", "--count", "5", "web"]).ok();
    for args in [&["instance", "list", "-o", "json"][..], &["volume", "list", "-o", "json"][..]] {
        let out = env.kumo(args);
        let body: serde_json::Value = serde_json::from_str(out.ok()).expect("json");
        let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["items", "next"], "{args:?}: {body}");
        assert!(body["items"].is_array() && body["next"].is_null(), "{args:?}: {body}");
    }
    let out = env.kumo(&["instance", "list", "-o", "json"]);
    let body: serde_json::Value = serde_json::from_str(out.ok()).expect("json");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(5), "every page: {body}");
}

/// Regression (issue 20): `kumo instance stop db1` said "not a valid instance id".
#[test]
fn instance_commands_take_a_name() {
    let env = Env::logged_in();
    env.kumo(&["instance", "run", "--flavor", "small", "db1"]).ok();
    let id = env.fake.seen().instances[0].0.id.to_string();

    let out = env.kumo(&["instance", "stop", "db1"]);
    assert!(out.ok().starts_with("Stop requested for db1 ("), "{out:#?}");
    env.kumo(&["instance", "reboot", &id]).ok();
    assert_eq!(env.fake.seen().actions, [(id.clone(), "stop".to_owned()), (id.clone(), "reboot".to_owned())]);

    let shown = env.kumo(&["instance", "show", "db1"]);
    assert!(shown.ok().contains(&id), "{shown:#?}");
    let missing = env.kumo(&["instance", "show", "nope"]);
    assert_eq!(missing.failed(), "error: instance 'nope' not found (not_found)");
}

/// Regression (issue 20): a second `web1` launched silently, and commands naming it then failed.
#[test]
fn duplicate_name_warns_at_launch_and_ambiguous_names_list_the_candidates() {
    let env = Env::logged_in();
    let first = env.kumo(&["instance", "run", "--flavor", "small", "web1"]);
    first.ok();
    assert!(!first.stderr.contains("warning"), "{first:#?}");
    let second = env.kumo(&["instance", "run", "--flavor", "small", "web1"]);
    second.ok();
    assert!(second.stderr.contains("warning: another instance is also named 'web1': i-"), "{second:#?}");

    let ids: Vec<String> = env.fake.seen().instances.iter().map(|(i, _)| i.id.to_string()).collect();
    let line = env.kumo(&["instance", "stop", "web1"]).failed().to_owned();
    assert!(line.starts_with("error: 2 instances are named 'web1': "), "{line}");
    assert!(ids.iter().all(|id| line.contains(id.as_str())), "{line} lacks {ids:?}");
    assert!(line.ends_with("; use the id (conflict)"), "{line}");
    assert!(env.fake.seen().actions.is_empty());

    let refused = env.kumo(&["instance", "run", "--flavor", "small", "--unique-name", "web1"]);
    assert!(refused.failed().contains("--unique-name refuses a second one"), "{refused:#?}");
    assert_eq!(env.fake.seen().instances.len(), 2, "nothing launched");
}

/// Regression (issue 20): `run --volume V --wait` returned while V was still `attaching`.
#[test]
fn run_wait_waits_for_volumes_to_be_attached() {
    let env = Env::logged_in();
    let out =
        env.kumo(&["instance", "run", "--flavor", "small", "--volume", "data", "--wait", "--timeout", "30", "db"]);
    out.ok();
    assert_eq!(env.fake.seen().volume_polls.get("data"), Some(&3), "stopped before in-use: {out:#?}");
}

/// `--wait-ready` waits for the guest's `KUMO-READY` line on its console.
#[test]
fn run_wait_ready_waits_for_the_ready_line() {
    let env = Env::logged_in();
    let out = env.kumo(&["instance", "run", "--flavor", "small", "--wait-ready", "web"]);
    assert!(out.ok().contains("running"), "{out:#?}");
    let seen = env.fake.seen();
    assert_eq!(seen.console_polls.values().copied().collect::<Vec<_>>(), [3], "{out:#?}");
}

/// Regression (issue 20): `console` right after launch printed nothing and said nothing.
#[test]
fn console_without_output_says_so() {
    let env = Env::logged_in();
    env.kumo(&["instance", "run", "--flavor", "small", "web"]).ok();
    let out = env.kumo(&["instance", "console", "web"]);
    assert_eq!(out.ok(), "");
    assert!(out.stderr.contains("no console output yet: web is "), "{out:#?}");
    assert!(out.stderr.contains("has printed nothing so far"), "{out:#?}");
}

#[test]
fn instance_resize_changes_the_flavor_of_a_stopped_instance_and_shows_the_refusal() {
    let env = Env::logged_in();
    env.kumo(&["instance", "run", "--flavor", "small", "db1"]).ok();
    let refused = env.kumo(&["instance", "resize", "db1", "--flavor", "medium"]);
    assert!(refused.failed().contains("its flavor changes only while it is stopped (conflict)"), "{refused:#?}");
    env.kumo(&["instance", "stop", "db1"]).ok();
    let out = env.kumo(&["instance", "resize", "db1", "--flavor", "medium", "-o", "json"]);
    let shown: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(shown["flavor"], "medium", "{shown}");
}
