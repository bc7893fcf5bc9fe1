//! Several compute hosts under test (issue 16): a controller and two hosts,
//! each with its own libvirtd, network namespace and agent
//! ([`kumo_tests::fleet`]), with real TCG guests.
//!
//! Network safety: every link, bridge and namespace here is the fleet's own
//! (`kfb`/`kfo`/`kfi` + tag, namespaces `kfl-<tag>-<n>`); traffic stays on
//! the fabric bridge between the controller's address and the hosts'
//! namespaces.

use std::time::Duration;

use anyhow::{Context, Result};
use kumo_tests::fleet::{Fleet, FleetOptions};
use kumo_tests::{enabled, Options};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(300);

/// Runs one `mini` instance named `name` with `extra` arguments; returns its id.
fn run(f: &mut Fleet, user: Option<&str>, name: &str, extra: &[&str]) -> Result<String> {
    let mut args = vec!["instance", "run", "--flavor", "mini"];
    args.extend_from_slice(extra);
    args.push(name);
    let ran = match user {
        None => f.kumo_json(&args)?,
        Some(user) => f.kumo_json_as(user, &args)?,
    };
    let inst = ran.get("instances").and_then(|i| i.get(0)).cloned().unwrap_or(ran.clone());
    let id = inst["id"].as_str().with_context(|| format!("no id in {ran}"))?.to_owned();
    f.track(&id);
    Ok(id)
}

/// Waits until the instance is `state`; returns its JSON.
fn wait_state(f: &Fleet, id: &str, state: &str, timeout: Duration) -> Result<Value> {
    f.wait_until(timeout, &format!("{id} to be {state}"), |s| Ok(s.instance(id)?["state"] == state))?;
    f.instance(id)
}

/// The placement's verdict line for `host`.
fn verdict<'a>(inst: &'a Value, host: &str) -> Option<&'a Value> {
    inst["placement"]["verdicts"].as_array()?.iter().find(|v| v["host"] == host)
}

#[test]
fn two_hosts_spread_pin_local_volumes_skip_a_disabled_one_and_outlive_a_dead_one() {
    if !enabled() {
        return;
    }
    let started = std::time::Instant::now();
    let mut f = Fleet::start(FleetOptions {
        hosts: 2,
        stack: Options { host_timeout_secs: Some(15), ..Options::default() },
        ..FleetOptions::default()
    })
    .unwrap();
    eprintln!("FIGURE fleet of 2 hosts up (fabric, 2 libvirtd, 2 agents registered): {:?}", started.elapsed());
    let (h1, h2) = (f.hosts[0].name.clone(), f.hosts[1].name.clone());
    f.register_tiny_image().unwrap();

    // Spread: two instances land on two hosts, each placement explained.
    let a = run(&mut f, None, "spread-a", &[]).unwrap();
    let a_inst = wait_state(&f, &a, "running", BOOT).unwrap();
    let b = run(&mut f, None, "spread-b", &[]).unwrap();
    let b_inst = wait_state(&f, &b, "running", BOOT).unwrap();
    let (a_host, b_host) = (a_inst["host_name"].as_str().unwrap(), b_inst["host_name"].as_str().unwrap());
    assert_ne!(a_host, b_host, "spread puts the second instance on the other host");
    for (inst, host) in [(&a_inst, a_host), (&b_inst, b_host)] {
        let placement = &inst["placement"];
        assert_eq!(placement["strategy"], "spread", "{placement}");
        assert_eq!(placement["host_name"], host, "{placement}");
        for name in [&h1, &h2] {
            let v = verdict(inst, name).unwrap_or_else(|| panic!("no verdict for {name}: {placement}"));
            assert_eq!(v["accepted"], true, "both hosts fit: {placement}");
        }
        assert_eq!(placement["verdicts"][0]["host"], host, "the chosen host comes first: {placement}");
    }
    // Each guest runs in its own host's libvirtd, and only there.
    let (host_a, host_b) = (f.host(a_host).unwrap(), f.host(b_host).unwrap());
    assert_eq!(host_a.domstate(&a).as_deref(), Some("running"));
    assert_eq!(host_b.domstate(&b).as_deref(), Some("running"));
    assert_eq!(host_a.domstate(&b), None, "{b} defined on {a_host} too");
    assert_eq!(host_b.domstate(&a), None, "{a} defined on {b_host} too");
    // The console crosses the fabric to each host's agent.
    for id in [&a, &b] {
        f.wait_console(id, &format!("KUMO-READY instance-id={id} "), BOOT).unwrap();
    }

    // A local volume pins its instance to the volume's host; the other host
    // is rejected with that reason.
    let vol = f.kumo_json(&["volume", "create", "pinned-data", "--size", "1", "--wait"]).unwrap();
    let vol_host = vol["host_name"].as_str().unwrap_or_else(|| panic!("a local volume has a host: {vol}")).to_owned();
    let other_host = if vol_host == h1 { h2.clone() } else { h1.clone() };
    let e = run(&mut f, None, "pinned", &["--volume", "pinned-data", "--wait"]).unwrap();
    let e_inst = f.instance(&e).unwrap();
    assert_eq!(e_inst["state"], "running", "{e_inst}");
    assert_eq!(e_inst["host_name"], vol_host.as_str(), "the instance follows its local volume");
    let rejected = verdict(&e_inst, &other_host).unwrap_or_else(|| panic!("no verdict for {other_host}: {e_inst}"));
    assert_eq!(rejected["accepted"], false, "{rejected}");
    assert_eq!(
        rejected["reason"],
        format!("not the host of the instance's local volumes ({vol_host})").as_str(),
        "{rejected}"
    );
    assert_eq!(f.kumo_json(&["volume", "show", "pinned-data"]).unwrap()["state"], "in-use");
    assert_eq!(f.host(&vol_host).unwrap().domstate(&e).as_deref(), Some("running"));

    // A disabled host is skipped, and the placement says why.
    f.kumo_ok(&["host", "disable", a_host]).unwrap();
    let c = run(&mut f, None, "skip-disabled", &[]).unwrap();
    let c_inst = wait_state(&f, &c, "running", BOOT).unwrap();
    assert_eq!(c_inst["host_name"], b_host, "the disabled host took an instance");
    let skipped = verdict(&c_inst, a_host).unwrap_or_else(|| panic!("no verdict for {a_host}: {c_inst}"));
    assert_eq!(skipped["accepted"], false, "{skipped}");
    assert_eq!(skipped["reason"], "disabled by an operator", "{skipped}");
    f.kumo_ok(&["host", "enable", a_host]).unwrap();

    // Host A dies (agent and libvirtd end; its guest's QEMU keeps running):
    // its instance becomes `unknown`, host B's stay running and managed.
    let dead = a_host.to_owned();
    {
        let host = f.host_mut(&dead).unwrap();
        host.stop_agent();
        host.stop_libvirtd().unwrap();
    }
    let a_now = wait_state(&f, &a, "unknown", Duration::from_secs(120)).unwrap();
    assert!(a_now["state_reason"].as_str().is_some_and(|r| !r.is_empty()), "unknown has a reason: {a_now}");
    let hosts = f.kumo_json(&["host", "list"]).unwrap();
    let status =
        |name: &str| hosts["items"].as_array().unwrap().iter().find(|h| h["name"] == name).map(|h| h["status"].clone());
    assert_eq!(status(&dead), Some(Value::from("unreachable")), "{hosts}");
    assert_eq!(status(b_host), Some(Value::from("up")), "{hosts}");
    for id in [&b, &c] {
        assert_eq!(f.instance(id).unwrap()["state"], "running", "{id} on the live host");
    }
    // Managed: host B still carries out a stop and a start.
    f.kumo_ok(&["instance", "stop", "--wait", &b]).unwrap();
    assert_eq!(f.host(b_host).unwrap().domstate(&b).as_deref(), Some("shut off"));
    f.kumo_ok(&["instance", "start", "--wait", &b]).unwrap();
    let boots = f.markers(&b).unwrap();
    f.wait_until(BOOT, "B's second boot", |s| Ok(s.markers(&b)? > boots)).unwrap();
    // A new launch avoids the silent host, with its reason.
    let d = run(&mut f, None, "avoid-dead", &[]).unwrap();
    let d_inst = wait_state(&f, &d, "running", BOOT).unwrap();
    assert_eq!(d_inst["host_name"], b_host);
    let skipped = verdict(&d_inst, &dead).unwrap_or_else(|| panic!("no verdict for {dead}: {d_inst}"));
    assert_eq!(skipped["accepted"], false, "{skipped}");
    assert!(skipped["reason"].as_str().unwrap_or_default().starts_with("unreachable"), "{skipped}");
    eprintln!("FIGURE two-host fleet test wall time: {:?}", started.elapsed());
}

/// Runs a `mini` instance on `--network lan` whose user data is `script`;
/// returns (id, fixed IP).
fn run_with_script(f: &mut Fleet, user: Option<&str>, name: &str, script: &str) -> Result<(String, String)> {
    let file = f.dir.path().join(format!("{name}.user-data"));
    std::fs::write(&file, script)?;
    let file = file.to_string_lossy().into_owned();
    let id = run(f, user, name, &["--network", "lan", "--user-data-file", &file])?;
    let inst = match user {
        None => f.instance(&id)?,
        Some(user) => f.kumo_json_as(user, &["instance", "show", &id])?,
    };
    let ip = inst["addresses"][0]["ip"].as_str().with_context(|| format!("no address in {inst}"))?.to_owned();
    Ok((id, ip))
}

/// A guest script: ping `target` up to `tries` times, print whether it answered.
fn ping_script(target: &str, tries: u32) -> String {
    format!(
        "#!/bin/sh\nfor i in $(seq 1 {tries}); do\n  if ping -c 1 -W 2 {target} >/dev/null 2>&1; then echo PEER-REACHABLE {target}; exit 0; fi\n  sleep 1\ndone\necho PEER-UNREACHABLE {target}\nexit 1\n"
    )
}

/// The console of an instance of `user` (None: the admin) once it shows `needle`.
fn wait_console_as(f: &Fleet, user: Option<&str>, id: &str, needle: &str) -> Result<String> {
    let mut last = String::new();
    f.wait_until(BOOT, &format!("'{needle}' on the console of {id}"), |s| {
        last = match user {
            None => s.console(id)?,
            Some(user) => String::from_utf8_lossy(&s.kumo_as(user, &["instance", "console", id])?.stdout).into_owned(),
        };
        Ok(last.contains(needle))
    })
    .with_context(|| format!("console of {id}:\n{last}"))?;
    Ok(last)
}

#[test]
fn a_network_spans_two_hosts_in_vxlan_and_another_project_stays_out() {
    if !enabled() {
        return;
    }
    let started = std::time::Instant::now();
    let mut f = Fleet::start(FleetOptions { hosts: 2, vxlan: true, ..FleetOptions::default() }).unwrap();
    f.register_tiny_image().unwrap();
    f.kumo_ok(&["network", "create", "lan", "--cidr", "10.77.1.0/24"]).unwrap();

    // A boots first; spread puts B on the other host; B pings A across the fabric.
    let (a, a_ip) = run_with_script(&mut f, None, "peer-a", "#!/bin/sh\necho up\n").unwrap();
    let a_host = wait_state(&f, &a, "running", BOOT).unwrap()["host_name"].as_str().unwrap().to_owned();
    let (b, _) = run_with_script(&mut f, None, "peer-b", &ping_script(&a_ip, 30)).unwrap();
    let b_host = wait_state(&f, &b, "running", BOOT).unwrap()["host_name"].as_str().unwrap().to_owned();
    assert_ne!(a_host, b_host, "A and B must run on two hosts for this test to mean anything");
    let console = wait_console_as(&f, None, &b, "KUMO-USERDATA-EXIT").unwrap();
    assert!(
        console.contains(&format!("KUMO-USERDATA: PEER-REACHABLE {a_ip}")),
        "B on {b_host} reaches A on {a_host}: {console}"
    );
    // The frames crossed in VXLAN: B's host learned A's MAC behind A's host's underlay address.
    let a_mac = f.instance(&a).unwrap()["addresses"][0]["mac"].as_str().unwrap_or_default().to_owned();
    let vni = f.kumo_json(&["network", "show", "lan"]).unwrap()["vlan_id"].as_u64().unwrap();
    let fdb = f.host(&b_host).unwrap().exec(&["bridge", "fdb", "show", "dev", &format!("kvx{vni}")]).unwrap();
    let a_underlay = f.host(&a_host).unwrap().address.to_string();
    assert!(
        fdb.lines().any(|l| l.starts_with(&a_mac) && l.contains(&format!("dst {a_underlay}"))),
        "A's MAC {a_mac} behind {a_underlay} in B's host's VXLAN FDB:\n{fdb}"
    );

    // Another project, the same CIDR (so C takes A's address; it pings B's),
    // on A's host: C cannot reach B on the other host.
    let b_ip = f.instance(&b).unwrap()["addresses"][0]["ip"].as_str().unwrap().to_owned();
    f.login_as("carol", "other").unwrap();
    f.kumo_json_as("carol", &["network", "create", "lan", "--cidr", "10.77.1.0/24"]).unwrap();
    f.kumo_ok(&["host", "disable", &b_host]).unwrap();
    // C proves its own network works (its gateway answers), then tries B.
    let c_script =
        format!("#!/bin/sh\nping -c 2 -W 2 10.77.1.1 >/dev/null && echo GATEWAY-OK\n{}", &ping_script(&b_ip, 8)[10..]);
    let (c, c_ip) = run_with_script(&mut f, Some("carol"), "other-c", &c_script).unwrap();
    assert_ne!(c_ip, b_ip);
    let console = wait_console_as(&f, Some("carol"), &c, "KUMO-USERDATA-EXIT").unwrap();
    assert_eq!(f.host(&a_host).unwrap().domstate(&c).as_deref(), Some("running"), "C runs on A's host");
    assert!(console.contains("KUMO-USERDATA: GATEWAY-OK"), "C's own network works: {console}");
    assert!(console.contains(&format!("KUMO-USERDATA: PEER-UNREACHABLE {b_ip}")), "C must not reach B: {console}");
    f.kumo_ok(&["host", "enable", &b_host]).unwrap();
    eprintln!("FIGURE VXLAN two-host network test wall time: {:?}", started.elapsed());
}

#[test]
fn three_hosts_are_separate_machines_and_leave_nothing_behind() {
    if !enabled() {
        return;
    }
    let f = Fleet::start(FleetOptions { hosts: 3, ..FleetOptions::default() }).unwrap();
    let tag = f.tag().to_owned();
    let mut uuids = Vec::new();
    let mut daemons = Vec::new();
    for host in &f.hosts {
        // Its own libvirtd: its own hostname and host UUID, no other host's domains.
        assert_eq!(host.virsh(&["hostname"]).unwrap().trim(), host.name);
        let caps = host.virsh(&["capabilities"]).unwrap();
        let uuid = caps.split("<uuid>").nth(1).and_then(|r| r.split("</uuid>").next()).unwrap().to_owned();
        uuids.push(uuid);
        assert_eq!(host.virsh(&["list", "--all", "--name"]).unwrap().trim(), "", "a fresh libvirtd has no domains");
        // Its agent and libvirtd live in its namespace.
        let in_ns = std::process::Command::new("ip").args(["netns", "pids", &host.netns]).output().unwrap();
        let in_ns: Vec<String> = String::from_utf8_lossy(&in_ns.stdout).split_whitespace().map(str::to_owned).collect();
        let comms: Vec<String> = in_ns
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().trim().to_owned())
            .collect();
        for daemon in ["libvirtd", "virtlogd", "kumo-agent"] {
            assert!(comms.iter().any(|c| c == daemon), "{daemon} in {}: {comms:?}", host.netns);
        }
        daemons.extend(in_ns.iter().map(|p| (p.clone(), start_time(p))));
    }
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), 3, "three distinct host UUIDs");
    let hosts = f.kumo_json(&["host", "list"]).unwrap();
    let up = hosts["items"].as_array().unwrap().iter().filter(|h| h["status"] == "up").count();
    assert_eq!(up, 3, "{hosts}");

    drop(f);
    let namespaces =
        String::from_utf8_lossy(&std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout)
            .into_owned();
    assert!(!namespaces.contains(&format!("kfl-{tag}-")), "namespaces left: {namespaces}");
    let links =
        String::from_utf8_lossy(&std::process::Command::new("ip").args(["-o", "link"]).output().unwrap().stdout)
            .into_owned();
    assert!(!links.contains(&format!("kfb{tag}")) && !links.contains(&format!("kfo{tag}")), "links left: {links}");
    for (pid, started) in daemons {
        // The same PID with the same start time (PIDs are reused).
        assert!(
            started.is_none() || start_time(&pid) != started,
            "process {pid} of the fleet left running: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
    }
    assert!(!std::path::Path::new(&format!("/run/kumo-fleet/{tag}")).exists(), "the fleet's record left");
}

/// A process's start time (field 22 of /proc/PID/stat), None once it has
/// ended (gone, or a zombie its parent, here init for daemons, has not reaped yet).
fn start_time(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name's closing parenthesis: state (field 3), ..., start time (field 22).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    (fields.first() != Some(&"Z")).then(|| fields.get(19).map(|s| (*s).to_owned())).flatten()
}
