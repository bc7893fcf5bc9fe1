//! Two controller replicas on one PostgreSQL database behind HAProxy (issue
//! 19), with real TCG guests. The agent syncs with replica B and fails over
//! to A. An image uploaded through A launches through B, an instance
//! snapshot taken through A launches through the load balancer, and launches
//! through either replica reach `running` alike (wake-ups cross replicas).
//! Then B is killed (-9) while launches, a delete, uploads and hour closes
//! are under way: every operation completes or fails with a reason, A
//! carries on (with its copies of the images, the snapshot's included), no
//! running second is billed twice, and `kumo admin audit` is clean.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kumo_tests::{bin, enabled, free_port, tiny_image_dir, Options, Process, Stack};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(180);
/// Billing hours last two seconds here, so the test sees many close on both replicas.
const BILLING: &str = "billing_hour_secs = 2\nbilling_close_grace_secs = 0\nbilling_close_interval_secs = 1\n";

/// A fresh PostgreSQL database's URL.
fn fresh_database() -> String {
    let base = std::env::var("KUMO_TEST_POSTGRES_URL").expect("scripts/test.sh starts PostgreSQL");
    let name = format!("kumo_e2e_{}", &kumo_wire::HostId::generate().as_str()[5..]);
    let status = Command::new("psql").args([&base, "-q", "-c", &format!("CREATE DATABASE {name}")]).status().unwrap();
    assert!(status.success());
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

fn wait_healthy(url: &str) {
    let client = kumo_tests::http_client(Duration::from_secs(2), None).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if client.get(format!("{url}/healthz")).send().is_ok_and(|r| r.status().is_success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{url} never answered /healthz");
}

/// The `kumo` CLI with its own config file (its own endpoint and token); its output whatever the exit code.
fn cli_output(config: &Path, args: &[&str]) -> Output {
    Command::new(bin("kumo"))
        .env("KUMO_CONFIG", config)
        .env_remove("KUMO_ENDPOINT")
        .env_remove("KUMO_TOKEN")
        .env_remove("KUMO_CA_CERT")
        .stdin(Stdio::null())
        .arg("--output")
        .arg("json")
        .args(args)
        .output()
        .unwrap()
}

/// [`cli_output`] that must succeed; its JSON.
fn cli(config: &Path, args: &[&str]) -> Value {
    let out = cli_output(config, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kumo {args:?}: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or(Value::Null)
}

fn login(config: &Path, endpoint: &str) {
    let out = Command::new(bin("kumo"))
        .env("KUMO_CONFIG", config)
        .env_remove("KUMO_ENDPOINT")
        .env_remove("KUMO_TOKEN")
        .args(["login", "--endpoint", endpoint, "--username", "admin", "--password", "e2e-admin-pass"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The instance in a `run` reply.
fn id_of(ran: &Value) -> String {
    let inst = ran.get("instances").and_then(|i| i.get(0)).cloned().unwrap_or(ran.clone());
    inst["id"].as_str().unwrap_or_else(|| panic!("no id in {ran}")).to_owned()
}

/// Runs one instance with `--wait` through the CLI config `config`; its id and how long it took.
fn launch(s: &mut Stack, config: &Path, name: &str, image: &str) -> (String, Duration) {
    let asked = Instant::now();
    let ran =
        cli(config, &["instance", "run", "--flavor", "mini", "--image", image, "--wait", "--timeout", "240", name]);
    let took = asked.elapsed();
    let id = id_of(&ran);
    s.track(&id);
    assert_eq!(s.instance(&id).unwrap()["state"], "running");
    (id, took)
}

fn register(config: &Path, name: &str) -> String {
    let dir = tiny_image_dir();
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.img"));
    let image = cli(
        config,
        &[
            "image",
            "register",
            "--name",
            name,
            "--kernel",
            &kernel.to_string_lossy(),
            "--initrd",
            &initrd.to_string_lossy(),
            "--public",
        ],
    );
    image["id"].as_str().unwrap_or_else(|| panic!("no id in {image}")).to_owned()
}

/// Files of `image` in a replica's image store.
fn copies_in(data_dir: &Path, image: &str) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir.join("images").join(image))
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| !p.to_string_lossy().contains("partial")).collect())
        .unwrap_or_default()
}

/// Waits until a replica's store holds `n` files of `image`.
fn wait_copies(data_dir: &Path, image: &str, n: usize) -> Duration {
    let start = Instant::now();
    while copies_in(data_dir, image).len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{image} never reached {n} files in {}",
            data_dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    start.elapsed()
}

/// A qcow2 disk image of `mib` MiB of random data (uploads take a moment).
fn random_qcow2(dir: &Path, mib: usize) -> PathBuf {
    let raw = dir.join("random.raw");
    let mut bytes = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&raw, bytes).unwrap();
    let qcow2 = dir.join("big.qcow2");
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2", &raw.to_string_lossy(), &qcow2.to_string_lossy()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(raw).unwrap();
    qcow2
}

/// An operation started before the kill: its name and how the CLI ended.
type Outcome = (String, Output);

/// Every CLI run that failed must say why (`error: ...`), not crash or hang.
fn assert_clean(outcomes: &[Outcome]) {
    for (what, out) in outcomes {
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("DURING THE KILL {what}: {} {}", out.status, stderr.trim());
        if !out.status.success() {
            assert_eq!(out.status.code(), Some(1), "{what} ended without an exit code: {stderr}");
            assert!(stderr.contains("error:") && stderr.trim().len() > 10, "{what} failed without a reason: {stderr}");
        }
    }
}

#[test]
fn two_replicas_behind_haproxy_share_images_wake_ups_and_survive_a_kill() {
    if !enabled() {
        return;
    }
    let database = fresh_database();
    // Replica A: the stack's controller.
    let mut s = Stack::start(Options {
        database_url: Some(database.clone()),
        controller_extra: format!("image_store = 'replicated'\nreplica_url = '{{ENDPOINT}}'\n{BILLING}"),
        ..Options::default()
    })
    .unwrap();
    let a_data = s.dir.path().join("controller");

    // Replica B: its own data directory with A's sealing key.
    let b_port = free_port().unwrap();
    let b_url = format!("http://127.0.0.1:{b_port}");
    let b_data = s.dir.path().join("controller-b");
    std::fs::create_dir_all(&b_data).unwrap();
    std::fs::copy(a_data.join("sealing.key"), b_data.join("sealing.key")).unwrap();
    let b_config = s.dir.path().join("controller-b.toml");
    std::fs::write(
        &b_config,
        format!(
            "listen = '127.0.0.1:{b_port}'\ndata_dir = '{}'\ndatabase_url = '{database}'\nadmin_password = \
             'e2e-admin-pass'\njoin_token = 'e2e-join'\nimage_store = 'replicated'\nreplica_url = '{b_url}'\n\
             stopping_deadline_secs = 120\nrebooting_deadline_secs = 120\n{BILLING}",
            b_data.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("kumo-api"));
    cmd.arg("--config").arg(&b_config).env("KUMO_LOG", "info,kumo_api=debug");
    let mut b = Process::spawn(cmd, s.dir.path().join("controller-b.log")).unwrap();
    wait_healthy(&b_url);

    // The agent syncs with B, and fails over to A.
    s.restart_agent_with_env(&[
        ("KUMO_AGENT_CONTROLLER_URL", &b_url),
        ("KUMO_AGENT_CONTROLLER_URLS", &s.endpoint.clone()),
    ])
    .unwrap();

    // HAProxy in front of both.
    let lb_port = free_port().unwrap();
    let lb_url = format!("http://127.0.0.1:{lb_port}");
    let a_port = s.endpoint.rsplit(':').next().unwrap().to_owned();
    let haproxy_cfg = s.dir.path().join("haproxy.cfg");
    std::fs::write(
        &haproxy_cfg,
        format!(
            "global\n  log stdout format raw local0\ndefaults\n  log global\n  option httplog\n  mode http\n  timeout connect 2s\n  timeout client 90s\n  timeout server 90s\n  retries 3\n  \
             option redispatch\nfrontend kumo\n  bind 127.0.0.1:{lb_port}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n  option httpchk GET /healthz\n  \
             server a 127.0.0.1:{a_port} check inter 500ms fall 2 rise 1\n  \
             server b 127.0.0.1:{b_port} check inter 500ms fall 2 rise 1\n"
        ),
    )
    .unwrap();
    let mut haproxy = Command::new("haproxy");
    haproxy.arg("-db").arg("-f").arg(&haproxy_cfg);
    let _haproxy = Process::spawn(haproxy, s.dir.path().join("haproxy.log")).unwrap();
    wait_healthy(&lb_url);

    let (cli_a, cli_b, cli_lb) =
        (s.dir.path().join("cli.toml"), s.dir.path().join("cli-b.toml"), s.dir.path().join("cli-lb.toml"));
    login(&cli_b, &b_url);
    login(&cli_lb, &lb_url);

    // Uploaded through A, launched through B: the agent downloads from B, which fetches from A.
    let tiny = register(&cli_a, "tiny");
    let (first, via_b_cold) = launch(&mut s, &cli_b, "via-b", "tiny");
    s.wait_until(BOOT, "the first guest's marker", |s| Ok(s.markers(&first)? >= 1)).unwrap();
    assert_eq!(copies_in(&b_data, &tiny).len(), 2, "B kept its copies of kernel and initrd");

    // An instance snapshot taken through A (the agent uploads it to B) ...
    let snap = cli(&cli_a, &["snapshot", "create", "first-snap", "--instance", &first, "--wait", "--timeout", "180"]);
    assert_eq!((snap["state"].as_str(), snap["kind"].as_str()), (Some("available"), Some("instance")), "{snap}");
    let snap_image = cli(&cli_a, &["image", "show", "first-snap"]);
    let snap_image = snap_image["id"].as_str().unwrap().to_owned();
    s.kumo_ok(&["instance", "delete", "--wait", &first]).unwrap();
    // ... launches through the load balancer.
    let (from_snap, _) = launch(&mut s, &cli_lb, "from-snap", "first-snap");
    s.kumo_ok(&["instance", "delete", "--wait", &from_snap]).unwrap();

    // The image is cached on the host now: launches through either replica
    // differ only by the wake-up path. (Each is deleted at once: few TCG guests at a time.)
    let (id, via_a) = launch(&mut s, &cli_a, "via-a", "tiny");
    s.kumo_ok(&["instance", "delete", "--wait", &id]).unwrap();
    let (id, via_b) = launch(&mut s, &cli_b, "via-b2", "tiny");
    s.kumo_ok(&["instance", "delete", "--wait", &id]).unwrap();
    let (victim, via_lb) = launch(&mut s, &cli_lb, "victim", "tiny");
    eprintln!(
        "FIGURE launch --wait to running: through B (image fetched from A) {via_b_cold:?}; cached image: through \
         A (agent polls B) {via_a:?}, through B {via_b:?}, through HAProxy {via_lb:?}"
    );

    // A second image through the load balancer; the replication worker puts
    // it on both, the snapshot's image too (before B goes).
    let second = register(&cli_lb, "tiny-2");
    let snap_files = copies_in(&b_data, &snap_image).len().max(copies_in(&a_data, &snap_image).len());
    assert!(snap_files >= 1, "the snapshot's image has files on a replica");
    for (image, files) in [(&tiny, 2), (&second, 2), (&snap_image, snap_files)] {
        for data in [&a_data, &b_data] {
            wait_copies(data, image, files);
        }
    }

    // B is killed while launches, a delete, uploads and hour closes are under way.
    // Some through the load balancer, some straight to B (those must fail cleanly).
    let big = random_qcow2(s.dir.path(), 192);
    let big = big.to_string_lossy().into_owned();
    let ops: Vec<(&str, &Path, String)> = vec![
        ("launch k1", &cli_lb, "instance run --flavor mini --image tiny --wait --timeout 240 k1".into()),
        ("launch k2", &cli_lb, "instance run --flavor mini --image tiny-2 --wait --timeout 240 k2".into()),
        ("launch kb via B", &cli_b, "instance run --flavor mini --image tiny --wait --timeout 240 kb".into()),
        ("delete victim", &cli_lb, format!("instance delete --wait {victim}")),
        ("upload big-1", &cli_lb, format!("image upload --name big-1 {big}")),
        ("upload big-2", &cli_lb, format!("image upload --name big-2 {big}")),
        ("upload big-b via B", &cli_b, format!("image upload --name big-b {big}")),
        ("close hours", &cli_lb, "billing close".into()),
    ];
    let during: Vec<Outcome> = std::thread::scope(|scope| {
        let running: Vec<_> = ops
            .iter()
            .map(|(what, config, args)| {
                scope.spawn(move || {
                    let args: Vec<&str> = args.split(' ').collect();
                    (what.to_string(), cli_output(config, &args))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        let in_flight = running.iter().filter(|t| !t.is_finished()).count();
        b.signal("KILL").unwrap();
        let _ = b.child.wait();
        eprintln!("KILLED B with {in_flight} of {} operations in flight", ops.len());
        assert!(in_flight > 0, "the kill came after every operation ended");
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_clean(&during);
    // Which replica HAProxy gave each request in flight (its log, `server` field).
    let lb_log = std::fs::read_to_string(s.dir.path().join("haproxy.log")).unwrap_or_default();
    for line in lb_log.lines().filter(|l| l.contains("/upload") || l.contains("POST /v1/instances ")) {
        eprintln!("HAPROXY {line}");
    }

    // A carries on: every instance settles (running, or error with a
    // reason); what failed is done again through the load balancer.
    let settled = |_: &Stack| -> anyhow::Result<bool> {
        let listed = cli(&cli_lb, &["instance", "list"]);
        Ok(listed["items"].as_array().unwrap().iter().all(|i| match i["state"].as_str() {
            Some("running") => true,
            Some("error") => i["state_reason"].as_str().is_some_and(|r| !r.is_empty()),
            _ => false,
        }))
    };
    s.wait_until(BOOT, "every instance to settle after the kill", settled).unwrap();
    let listed = cli(&cli_lb, &["instance", "list"]);
    let mut ids = Vec::new();
    for inst in listed["items"].as_array().unwrap() {
        let id = inst["id"].as_str().unwrap().to_owned();
        s.track(&id);
        ids.push(id);
    }
    for name in ["k1", "k2", "kb"] {
        let relaunched = listed["items"].as_array().unwrap().iter().any(|i| i["name"] == name);
        if !relaunched {
            let ran = cli(
                &cli_lb,
                &["instance", "run", "--flavor", "mini", "--image", "tiny", "--wait", "--timeout", "240", name],
            );
            let id = id_of(&ran);
            s.track(&id);
            ids.push(id);
        }
    }
    for name in ["big-1", "big-2", "big-b"] {
        if cli_output(&cli_lb, &["image", "show", name]).status.success() {
            let shown = cli(&cli_lb, &["image", "show", name]);
            assert_eq!(shown["state"], "active", "an upload that was recorded is whole: {shown}");
        } else {
            cli(&cli_lb, &["image", "upload", "--name", name, &big]);
        }
    }
    // The snapshot's image launches from A's copy.
    let (after, _) = launch(&mut s, &cli_lb, "after-kill", "first-snap");
    ids.push(after.clone());
    s.wait_until(BOOT, "the guest launched after the kill", |s| Ok(s.markers(&after)? >= 1)).unwrap();

    // Everything is deleted through A; the audit finds nothing amiss.
    for id in &ids {
        let out = cli_output(&cli_lb, &["instance", "delete", "--wait", id]);
        assert!(out.status.success(), "deleting {id}: {}", String::from_utf8_lossy(&out.stderr));
    }
    s.wait_until(Duration::from_secs(60), "a clean audit", |s| {
        let out = s.kumo(&["admin", "audit", "--host", &s.host_name])?;
        Ok(out.status.success())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&s.kumo(&["admin", "audit"]).unwrap().stdout)));

    // Nothing billed twice: each instance's billed hours are exactly its running seconds.
    std::thread::sleep(Duration::from_secs(3));
    s.kumo_ok(&["billing", "close"]).unwrap();
    let usage = s.kumo_json(&["billing", "usage"]).unwrap();
    let rows = usage["resources"].as_array().unwrap();
    let all: Vec<Value> = cli(&cli_lb, &["instance", "list", "--all"])["items"].as_array().cloned().unwrap_or_default();
    let mut checked = 0;
    for inst in &all {
        let id = inst["id"].as_str().unwrap();
        let seconds = crate::billing::running_seconds(&s, id);
        let billed: f64 = rows
            .iter()
            .filter(|r| r["resource_id"] == id && r["item"] == "flavor:mini")
            .map(|r| r["usage_hours"].as_str().unwrap().parse::<f64>().unwrap())
            .sum();
        assert!(
            (billed * 2.0 - seconds as f64).abs() < 1e-9,
            "{id}: billed {billed} h for {seconds} s running: {usage}"
        );
        checked += 1;
    }
    assert!(checked >= 6, "instances checked: {checked} of {all:?}");
}
