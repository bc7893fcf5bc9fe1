//! Issue 11: a real cloud image, booted through Kumo. A Debian 12 image with
//! Debian's own cloud-init and its stock datasource detection
//! (scripts/build-debian-cloud-image.sh, named by
//! `KUMO_TEST_DEBIAN_CLOUD_IMAGE`) boots as a TCG guest twice: once reading
//! Kumo's metadata service (cloud-init's Ec2 datasource), once reading a
//! `--config-drive` with the agent's metadata service off (the NoCloud
//! datasource). Each time cloud-init takes the instance id, installs the key
//! pair's SSH key and runs the user data, and `ssh` into the guest through a
//! floating IP works once a security-group rule opens port 22, not before.
//!
//! Network safety: ssh runs in a network namespace this test creates, attached
//! by veth to a "public" bridge it creates (shared address space
//! 100.64.213.0/24 or 100.64.214.0/24, removed on drop); its traffic reaches
//! only the host's bridges and the guest. (Traffic the host itself sends to a
//! guest never meets the security groups, which filter forwarded traffic;
//! and Kumo routes each tenant network in a table of its own.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kumo_tests::{enabled, Options, Stack};
use serde_json::Value;

/// Boot to cloud-init's final stage under TCG on a loaded 2-core host.
const BOOT: Duration = Duration::from_secs(900);
/// A security-group change reaching the host's firewall, and the first login (a
/// user session starting under TCG can take minutes on a loaded host).
const CONVERGE: Duration = Duration::from_secs(300);
/// What cloud-init prints on the console when its last stage is done.
const FINISHED: &str = "finished at";

/// The image, or None (with a note) when scripts/test.sh did not build it.
fn image() -> Option<PathBuf> {
    match std::env::var_os("KUMO_TEST_DEBIAN_CLOUD_IMAGE") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            eprintln!(
                "cloud image test skipped: KUMO_TEST_DEBIAN_CLOUD_IMAGE unset \
                 (scripts/test.sh sets it from scripts/build-debian-cloud-image.sh)"
            );
            None
        }
    }
}

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The agent's public network: bridge `kq*` on the host (holding `<net>.1/24`)
/// and namespace `ko*` attached to it by veth (holding `<net>.254/24`).
struct Outside {
    bridge: String,
    veth: String,
    netns: String,
}

impl Outside {
    fn create(net: &str) -> Result<Self> {
        let id = kumo_wire::HostId::generate();
        let tag = &id.as_str()[5..11];
        let o = Self { bridge: format!("kq{tag}"), veth: format!("kw{tag}"), netns: format!("ko{tag}") };
        let (b, v, n) = (&o.bridge, &o.veth, &o.netns);
        let (peer, host_side) = (format!("{v}n"), format!("{v}h"));
        sh(&["ip", "link", "add", b, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", b])?;
        sh(&["ip", "link", "set", b, "up"])?;
        sh(&["ip", "netns", "add", n])?;
        sh(&["ip", "link", "add", &host_side, "type", "veth", "peer", "name", &peer])?;
        sh(&["ip", "link", "set", &host_side, "master", b, "up"])?;
        sh(&["ip", "link", "set", &peer, "netns", n])?;
        sh(&["ip", "-n", n, "addr", "add", &format!("{net}.254/24"), "dev", &peer])?;
        sh(&["ip", "-n", n, "link", "set", &peer, "up"])?;
        sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        Ok(o)
    }

    /// The /32 addresses on the bridge (floating IPs the agent added).
    fn slash32s(&self) -> Vec<String> {
        sh(&["ip", "-o", "-4", "addr", "show", "dev", &self.bridge])
            .unwrap_or_default()
            .split_whitespace()
            .filter(|w| w.ends_with("/32"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
        let _ = Command::new("ip").args(["link", "del", &format!("{}h", self.veth)]).output();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// `ssh debian@ip command` from the namespace with the test's key; the output when it exits 0.
fn ssh(outside: &Outside, key: &Path, ip: &str, command: &str) -> Result<String> {
    let target = format!("debian@{ip}");
    let out = Command::new("ip")
        .args(["netns", "exec", &outside.netns, "ssh", "-i"])
        .arg(key)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=30",
            "-o",
            "IdentitiesOnly=yes",
            target.as_str(),
            command,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running ssh")?;
    if !out.status.success() {
        bail!("ssh exited {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The guest's uptime in seconds at cloud-init's final stage, from its line
/// "Cloud-init v. X finished at ... Datasource D.  Up N seconds".
fn up_seconds(finished_line: &str) -> Option<f64> {
    let after = finished_line.split("Up ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

fn first_instance(ran: &Value) -> Value {
    let inst = ran.get("instances").and_then(|i| i.get(0)).cloned().unwrap_or(ran.clone());
    if inst.is_array() {
        inst[0].clone()
    } else {
        inst
    }
}

/// Boots the image on a fresh stack and checks what cloud-init did.
/// `datasource` is the class cloud-init must name (`DataSourceEc2`, `DataSourceNoCloud`).
/// `public` is the first three octets of the test's public network.
fn boot_cloud_image(image: &Path, agent_extra: &str, public: &str, cidr: &str, run_extra: &[&str], datasource: &str) {
    let outside = Outside::create(public).unwrap();
    let mut s = Stack::start(Options {
        agent_extra: format!("public_interface = '{}'\n{agent_extra}", outside.bridge),
        ..Options::default()
    })
    .unwrap();
    let registered = s
        .kumo_json(&[
            "image",
            "register",
            "--name",
            "debian-12",
            "--disk",
            &image.to_string_lossy(),
            "--format",
            "qcow2",
        ])
        .unwrap();
    assert_eq!(registered["name"], "debian-12", "{registered}");
    s.kumo_ok(&["network", "create", "lan", "--cidr", cidr]).unwrap();
    s.kumo_ok(&["network", "create", "public", "--cidr", &format!("{public}.0/24"), "--external"]).unwrap();
    s.kumo_ok(&["sg", "create", "ssh"]).unwrap();

    let key = s.dir.path().join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kumo-e2e", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let public_key = key.with_extension("pub");
    s.kumo_ok(&["keypair", "import", "e2e", "--public-key-file", &public_key.to_string_lossy()]).unwrap();

    // The user data: a shell script (cloud-init runs it in its final stage).
    let user_data = s.dir.path().join("user-data");
    std::fs::write(
        &user_data,
        "#!/bin/sh\nid=$(cat /var/lib/cloud/data/instance-id)\n\
         echo \"KUMO-CLOUDIMG-USERDATA ran for $id\" >/var/tmp/kumo-user-data\n\
         echo \"KUMO-CLOUDIMG-USERDATA ran for $id\" >/dev/ttyS0\n",
    )
    .unwrap();
    let user_data = user_data.to_string_lossy().into_owned();
    let mut args = vec![
        "instance",
        "run",
        "--image",
        "debian-12",
        "--flavor",
        "mini",
        "--network",
        "lan",
        "--key-pair",
        "e2e",
        "--security-group",
        "default",
        "--security-group",
        "ssh",
        "--user-data-file",
        &user_data,
    ];
    args.extend_from_slice(run_extra);
    args.push("cloudy");
    let asked = Instant::now();
    let ran = s.kumo_json(&args).unwrap();
    let inst = first_instance(&ran);
    let id = inst["id"].as_str().unwrap_or_else(|| panic!("no id in {ran}")).to_owned();
    s.track(&id);

    let console = s.wait_console(&id, FINISHED, BOOT).unwrap_or_else(|e| panic!("{e}\n{}", s.logs()));
    let run_to_final = asked.elapsed();
    let finished = console.lines().find(|l| l.contains(FINISHED)).unwrap_or_default().trim().to_owned();
    assert!(finished.contains(datasource), "cloud-init used another datasource: {finished}\n{console}");
    let up = up_seconds(&finished).unwrap_or_else(|| panic!("no uptime in {finished:?}"));
    eprintln!(
        "FIGURE debian-12 cloud image, {datasource}: boot to cloud-init final {up:.1} s (guest uptime), \
         instance run to final {run_to_final:.1?}"
    );
    assert!(console.contains(&format!("KUMO-CLOUDIMG-USERDATA ran for {id}")), "user data did not run: {console}");

    // A floating IP; the `ssh` group has no rule yet: port 22 is closed.
    let fip = s.kumo_json(&["fip", "allocate"]).unwrap();
    let (fip_id, ip) = (fip["id"].as_str().unwrap().to_owned(), fip["address"].as_str().unwrap().to_owned());
    s.kumo_ok(&["fip", "associate", &fip_id, &id]).unwrap();
    let plumbed = Instant::now();
    while outside.slash32s() != [format!("{ip}/32")] {
        assert!(plumbed.elapsed() < CONVERGE, "the floating IP never reached the public bridge");
        std::thread::sleep(Duration::from_millis(300));
    }
    let closed = ssh(&outside, &key, &ip, "true");
    assert!(closed.is_err(), "ssh got in before any rule opened port 22");
    s.kumo_ok(&["sg", "rule", "add", "ssh", "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0"]).unwrap();
    let opened = Instant::now();
    let mut last = None;
    let mut answer = None;
    while opened.elapsed() < CONVERGE {
        match ssh(
            &outside,
            &key,
            &ip,
            "cat /var/lib/cloud/data/instance-id; hostname; cat /var/tmp/kumo-user-data; \
             cat /run/cloud-init/.instance-id /var/lib/cloud/instance/datasource 2>/dev/null; \
             cloud-init status 2>/dev/null | tail -n 1; \
             grep -h '^datasource_list' /run/cloud-init/cloud.cfg",
        ) {
            Ok(out) => {
                answer = Some(out);
                break;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let answer = answer.unwrap_or_else(|| panic!("ssh never got in after the rule: {last:?}\n{}", s.logs()));
    eprintln!("FIGURE debian-12 cloud image, {datasource}: ssh in {:.1?} after the port-22 rule", opened.elapsed());
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines.first().copied(), Some(id.as_str()), "cloud-init's instance id: {answer}");
    assert_eq!(lines.get(1).copied(), Some("cloudy"), "the hostname: {answer}");
    assert!(answer.contains(&format!("KUMO-CLOUDIMG-USERDATA ran for {id}")), "{answer}");
    assert!(answer.contains(datasource), "the datasource cloud-init recorded: {answer}");
    assert!(answer.contains("status: done"), "cloud-init status: {answer}");
    // The image is stock: its own ds-identify chose the datasource (it writes
    // the list it found to /run/cloud-init/cloud.cfg).
    let short = datasource.trim_start_matches("DataSource");
    let found = answer.lines().find(|l| l.starts_with("datasource_list")).unwrap_or_default();
    assert!(found.contains(short), "ds-identify did not find {short}: {answer}");

    s.kumo_ok(&["fip", "disassociate", &fip_id]).unwrap();
    s.kumo_ok(&["fip", "release", &fip_id]).unwrap();
    s.kumo_ok(&["instance", "delete", "--wait", &id]).unwrap();
    assert_eq!(s.domstate(&id), None);
}

#[test]
fn debian_cloud_image_reads_the_metadata_service() {
    if !enabled() {
        return;
    }
    let Some(image) = image() else { return };
    boot_cloud_image(&image, "", "100.64.213", "10.213.1.0/24", &[], "DataSourceEc2");
}

#[test]
fn debian_cloud_image_reads_the_config_drive_without_metadata_service() {
    if !enabled() {
        return;
    }
    let Some(image) = image() else { return };
    boot_cloud_image(
        &image,
        "metadata = false\n",
        "100.64.214",
        "10.213.2.0/24",
        &["--config-drive"],
        "DataSourceNoCloud",
    );
}
