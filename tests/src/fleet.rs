//! Several compute hosts on this one machine: a controller and two or three
//! agents, each host with its own libvirtd, its own network namespace and its
//! own hostname, so the scheduler, per-host networking and "one host down,
//! the others fine" meet real TCG guests on more than one host.
//!
//! Layout of a fleet with tag `T` (6 hex digits, unique per fleet):
//!
//! ```text
//!  root namespace                       kfl-T-1 (host 1)                 kfl-T-2 (host 2)
//!  kumo-api on 10.252.K.1 ─┐            kfiT1 10.252.K.11               kfiT2 10.252.K.12
//!  kumo CLI                ├ kfbT ──┬── kfoT1 ═══ veth ═══ kfiT1        kumo-agent, libvirtd,
//!                          │ bridge └── kfoT2 ═══ veth ═══ kfiT2        QEMU, bridges, dnsmasq,
//!                                                                       nftables, metadata
//! ```
//!
//! - The **fabric** is one bridge `kfbT` in the root namespace holding the
//!   controller's address (`10.252.K.1/24`, `K` picked from the tag and not in
//!   use on the machine). It carries management (sync, console, image
//!   downloads), migration and tenant-underlay (VXLAN) traffic between the
//!   hosts, and nothing else: no route leads from it anywhere.
//! - A **host** is the network namespace `kfl-T-<n>` joined to the fabric by
//!   the veth `kfoT<n>`/`kfiT<n>` (address `10.252.K.<10+n>`), a libvirtd and
//!   virtlogd started inside it in their own mount and UTS namespaces (private
//!   bind mounts over `/run/libvirt`, `/var/lib/libvirt`, `/var/cache/libvirt`,
//!   `/etc/libvirt` with their own `host_uuid`, `/var/log/libvirt`; hostname
//!   `flT<n>`), answering at `qemu:///system?socket=<host dir>/libvirt/run/libvirt-sock`,
//!   and a `kumo-agent` inside the namespace using it. QEMU inherits the
//!   daemon's namespaces, so a guest's tap, its bridge, dnsmasq, the nftables
//!   table and the metadata listener all live in the host's namespace.
//! - **Tear-down** is by ownership, never by pattern over the machine: every
//!   process in a host's namespace is this fleet's (agent, libvirtd, virtlogd,
//!   QEMU, dnsmasq) and is ended by PID, then the namespace is deleted (its
//!   links, bridges and nftables go with it, and the veth's far end), then the
//!   fabric bridge. The mount namespaces end with their last process.
//! - A fleet records itself under `/run/kumo-fleet/T/owner` (the test
//!   process's PID); [`Fleet::start`] first reaps the fleets whose owner is
//!   dead (a test killed without unwinding), by their recorded names.

use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{bin, free_port, Options, Process, Stack};

/// Where fleets record themselves (tmpfs: gone with the namespaces at a reboot).
const REGISTRY: &str = "/run/kumo-fleet";
/// The fabric's addresses: `10.252.K.0/24`.
const FABRIC_PREFIX: [u8; 2] = [10, 252];

/// What a fleet looks like.
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// How many compute hosts (1-9).
    pub hosts: usize,
    /// The controller's settings (`controller_only_on` is set by the fleet).
    pub stack: Options,
    /// More agent settings for every host, as TOML lines. `{LOCAL}` is the
    /// host's fabric address, `{PEERS}` a TOML array of the other hosts'.
    pub agent_extra: String,
    /// Tenant networks cross hosts in VXLAN over the fabric (`vxlan_local` =
    /// the host's fabric address, `vxlan_peers` = the other hosts'); without
    /// it every host's networks are host-local.
    pub vxlan: bool,
}

/// A controller and several hosts; derefs to the controller's [`Stack`] for
/// the CLI helpers. Dropping it ends every host, then the controller, then
/// removes the fabric.
#[derive(Debug)]
pub struct Fleet {
    /// The hosts, in start order (`hosts[0]` is host 1).
    pub hosts: Vec<FleetHost>,
    /// The controller and the logged-in admin CLI.
    pub stack: Stack,
    fabric: Fabric,
}

impl Deref for Fleet {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

impl DerefMut for Fleet {
    fn deref_mut(&mut self) -> &mut Stack {
        &mut self.stack
    }
}

impl Fleet {
    /// Reaps dead fleets, makes the fabric, starts the controller on it and
    /// `opts.hosts` hosts, and waits until every host has registered.
    pub fn start(opts: FleetOptions) -> Result<Self> {
        if !(1..=9).contains(&opts.hosts) {
            bail!("a fleet has 1-9 hosts, not {}", opts.hosts);
        }
        reap_dead_fleets();
        let fabric = Fabric::create()?;
        let stack = Stack::start(Options { controller_only_on: Some(fabric.ip(1).to_string()), ..opts.stack.clone() })?;
        let mut fleet = Self { hosts: Vec::new(), stack, fabric };
        let addresses: Vec<Ipv4Addr> = (1..=opts.hosts).map(|n| fleet.fabric.host_ip(n)).collect();
        let mut agent_extra = opts.agent_extra.clone();
        if opts.vxlan {
            agent_extra.push_str("vxlan_local = '{LOCAL}'\nvxlan_peers = {PEERS}\n");
        }
        for n in 1..=opts.hosts {
            let local = addresses[n - 1];
            let peers: Vec<String> = addresses.iter().filter(|a| **a != local).map(|a| format!("'{a}'")).collect();
            let extra = agent_extra
                .replace("{LOCAL}", &local.to_string())
                .replace("{PEERS}", &format!("[{}]", peers.join(", ")));
            let host = FleetHost::start(&fleet.fabric, n, &fleet.stack.endpoint, &extra)?;
            fleet.hosts.push(host);
        }
        let names: Vec<String> = fleet.hosts.iter().map(|h| h.name.clone()).collect();
        fleet.stack.wait_until(Duration::from_secs(60), "every host to register", |s| {
            let hosts = s.kumo_json(&["host", "list"])?;
            let listed = hosts["items"].as_array().cloned().unwrap_or_default();
            Ok(names.iter().all(|n| listed.iter().any(|h| h["name"] == n.as_str())))
        })?;
        Ok(fleet)
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&FleetHost> {
        self.hosts.iter().find(|h| h.name == name).with_context(|| format!("no host {name} in this fleet"))
    }

    /// The mutable host named `name`.
    pub fn host_mut(&mut self, name: &str) -> Result<&mut FleetHost> {
        self.hosts.iter_mut().find(|h| h.name == name).with_context(|| format!("no host {name} in this fleet"))
    }

    /// The fleet's tag (part of every name it creates on the machine).
    pub fn tag(&self) -> &str {
        &self.fabric.tag
    }

    /// The last lines of every host's agent and libvirtd log, for failure reports.
    pub fn host_logs(&self) -> String {
        self.hosts.iter().map(FleetHost::logs).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.host_logs());
        }
        // Hosts first (guests, daemons, namespaces), then the controller
        // (the `stack` field's own drop), then the fabric (its drop).
        self.hosts.clear();
    }
}

/// The bridge joining the controller and the hosts.
#[derive(Debug)]
struct Fabric {
    tag: String,
    bridge: String,
    third_octet: u8,
    record: PathBuf,
}

impl Fabric {
    fn create() -> Result<Self> {
        let id = kumo_wire::HostId::generate();
        let tag = id.as_str()[5..11].to_owned();
        let in_use = sh(&["ip", "-o", "-4", "addr", "show"]).unwrap_or_default();
        let start = u8::from_str_radix(&tag[..2], 16).unwrap_or(0);
        let third_octet = (0..=255u16)
            .map(|i| ((u16::from(start) + i) % 250 + 1) as u8)
            .find(|k| !in_use.contains(&format!(" {}.{}.{k}.", FABRIC_PREFIX[0], FABRIC_PREFIX[1])))
            .context("every 10.252.K.0/24 is in use on this machine")?;
        let record = Path::new(REGISTRY).join(&tag);
        std::fs::create_dir_all(&record)?;
        std::fs::write(record.join("owner"), std::process::id().to_string())?;
        let fabric = Self { bridge: format!("kfb{tag}"), tag, third_octet, record };
        // The fabric carries VXLAN: the tenants' 1500 bytes plus 50.
        sh(&["ip", "link", "add", &fabric.bridge, "mtu", "1550", "type", "bridge"])?;
        sh(&["ip", "addr", "add", &format!("{}/24", fabric.ip(1)), "dev", &fabric.bridge])?;
        sh(&["ip", "link", "set", &fabric.bridge, "up"])?;
        Ok(fabric)
    }

    /// `10.252.K.last`.
    fn ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(FABRIC_PREFIX[0], FABRIC_PREFIX[1], self.third_octet, last)
    }

    /// Host `n`'s address on the fabric.
    fn host_ip(&self, n: usize) -> Ipv4Addr {
        self.ip(10 + n as u8)
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.record);
    }
}

/// One compute host: a network namespace, a libvirtd (and virtlogd) of its
/// own, and an agent. Dropping it ends every process in its namespace by
/// PID and deletes the namespace.
#[derive(Debug)]
pub struct FleetHost {
    /// The host's name (the agent's `name`, also the libvirtd's hostname).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its address on the fabric (management, migration and VXLAN underlay).
    pub address: Ipv4Addr,
    /// Its libvirt URI (as seen from any mount namespace).
    pub libvirt_uri: String,
    /// The agent's state directory.
    pub agent_state: PathBuf,
    /// The agent, while it runs.
    pub agent: Option<Process>,
    /// Holds the host's libvirt directories, configs and logs.
    pub dir: tempfile::TempDir,
    agent_config: PathBuf,
}

impl FleetHost {
    fn start(fabric: &Fabric, n: usize, endpoint: &str, agent_extra: &str) -> Result<Self> {
        let tag = &fabric.tag;
        let name = format!("fl{tag}h{n}");
        let netns = format!("kfl-{tag}-{n}");
        let (outer, inner) = (format!("kfo{tag}{n}"), format!("kfi{tag}{n}"));
        let address = fabric.host_ip(n);
        let dir = tempfile::Builder::new().prefix(&format!("kumo-{name}-")).tempdir_in("/var/tmp")?;
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let libvirt = dir.path().join("libvirt");
        let mut host = Self {
            name: name.clone(),
            netns: netns.clone(),
            address,
            libvirt_uri: format!("qemu:///system?socket={}/run/libvirt-sock", libvirt.display()),
            agent_state: dir.path().join("agent"),
            agent: None,
            agent_config: dir.path().join("agent.toml"),
            dir,
        };
        // The namespace and its veth to the fabric; from here on, drop cleans up.
        sh(&["ip", "netns", "add", &netns])?;
        sh(&["ip", "-n", &netns, "link", "set", "lo", "up"])?;
        sh(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &netns])?;
        sh(&["ip", "link", "set", &outer, "mtu", "1550", "master", &fabric.bridge, "up"])?;
        sh(&["ip", "-n", &netns, "link", "set", &inner, "mtu", "1550"])?;
        sh(&["ip", "-n", &netns, "addr", "add", &format!("{address}/24"), "dev", &inner])?;
        sh(&["ip", "-n", &netns, "link", "set", &inner, "up"])?;

        host.start_libvirtd()?;
        let agent_port = free_port()?;
        std::fs::write(
            &host.agent_config,
            format!(
                "controller_url = '{endpoint}'\njoin_token = 'e2e-join'\nname = '{name}'\n\
                 listen = '{address}:{agent_port}'\nlibvirt_uri = '{}'\ndomain_type = 'qemu'\n\
                 state_dir = '{}'\nshutdown_timeout_secs = 30\ndisk_gib = 50\nnft_table = 'kfl{tag}{n}'\n{agent_extra}",
                host.libvirt_uri,
                host.agent_state.display(),
            ),
        )?;
        host.start_agent()?;
        Ok(host)
    }

    /// Starts virtlogd and libvirtd in the host's namespaces (see the module's
    /// doc) and waits until libvirtd answers. Used again after [`FleetHost::stop_libvirtd`].
    pub fn start_libvirtd(&self) -> Result<()> {
        let libvirt = self.dir.path().join("libvirt");
        let dirs = [
            ("run", "/run/libvirt"),
            ("lib", "/var/lib/libvirt"),
            ("cache", "/var/cache/libvirt"),
            ("etc", "/etc/libvirt"),
            ("log", "/var/log/libvirt"),
        ];
        if !libvirt.join("etc").exists() {
            for (sub, _) in dirs {
                std::fs::create_dir_all(libvirt.join(sub))?;
            }
            std::fs::create_dir_all(libvirt.join("lib/qemu"))?;
            std::fs::create_dir_all(libvirt.join("etc/qemu"))?;
            // The machine's daemon settings (qemu.conf: root, no security
            // driver, no cgroups), but none of its domains.
            for file in ["qemu.conf", "libvirt.conf"] {
                let from = Path::new("/etc/libvirt").join(file);
                if from.exists() {
                    std::fs::copy(&from, libvirt.join("etc").join(file))?;
                }
            }
            let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")?;
            std::fs::write(libvirt.join("etc/libvirtd.conf"), format!("host_uuid = \"{}\"\n", uuid.trim()))?;
            // QEMU's capabilities, probed once by the machine's libvirtd
            // (valid here too: same binaries, same CPU); saves ~8 s a start.
            if Path::new("/var/cache/libvirt/qemu").exists() {
                sh(&["cp", "-a", "/var/cache/libvirt/qemu", &libvirt.join("cache").to_string_lossy()])?;
            }
        }
        let mut script = String::from("set -e\n");
        for (sub, target) in dirs {
            script.push_str(&format!("mount --bind '{}' {target}\n", libvirt.join(sub).display()));
        }
        let pid = |d: &str| libvirt.join(format!("{d}.pid")).display().to_string();
        script.push_str(&format!(
            "hostname {name}\n\
             LIBVIRT_LOG_OUTPUTS=3:file:/var/log/libvirt/virtlogd.log virtlogd -d -p '{}'\n\
             LIBVIRT_LOG_OUTPUTS=3:file:/var/log/libvirt/libvirtd.log taskset -c 0 libvirtd -d -p '{}'\n",
            pid("virtlogd"),
            pid("libvirtd"),
            name = self.name,
        ));
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.netns,
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if self.virsh(&["version"]).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("libvirtd of {} did not answer at {} within 60 s:\n{}", self.name, self.libvirt_uri, self.logs())
    }

    /// Ends this host's libvirtd (by the PID in its pid file); its guests keep running.
    pub fn stop_libvirtd(&self) -> Result<()> {
        let pid_file = self.dir.path().join("libvirt/libvirtd.pid");
        let pid = std::fs::read_to_string(&pid_file).with_context(|| format!("reading {}", pid_file.display()))?;
        let pid = pid.trim().to_owned();
        sh(&["kill", &pid])?;
        let start = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("libvirtd {pid} of {} did not end within 30 s", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Starts (or restarts) the agent inside the host's namespace.
    pub fn start_agent(&mut self) -> Result<()> {
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs the agent: the child's PID is the agent's.
        cmd.args(["netns", "exec", &self.netns])
            .arg(bin("kumo-agent"))
            .arg("--config")
            .arg(&self.agent_config)
            .env("KUMO_LOG", "info,kumo_agent=debug");
        self.agent = Some(Process::spawn(cmd, self.dir.path().join("agent.log"))?);
        Ok(())
    }

    /// Ends the agent (SIGTERM, then SIGKILL after 5 s).
    pub fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.stop();
        }
    }

    /// Runs `virsh -c <this host's libvirt> ARGS`; stdout, or an error with stderr.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["virsh", "-c", &self.libvirt_uri];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// `virsh domstate` of an instance's domain on this host; None when this
    /// host's libvirtd has no such domain (or does not answer).
    pub fn domstate(&self, instance: &str) -> Option<String> {
        self.virsh(&["domstate", &format!("kumo-{instance}")]).ok().map(|s| s.trim().to_owned())
    }

    /// Runs a command inside the host's network namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.netns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// The last lines of the host's agent and libvirtd logs.
    pub fn logs(&self) -> String {
        let tail = |p: PathBuf| {
            let s = std::fs::read_to_string(p).unwrap_or_default();
            s.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!(
            "--- {} agent.log ---\n{}\n--- {} libvirtd.log ---\n{}",
            self.name,
            tail(self.dir.path().join("agent.log")),
            self.name,
            tail(self.dir.path().join("libvirt/log/libvirtd.log"))
        )
    }
}

impl Drop for FleetHost {
    fn drop(&mut self) {
        self.stop_agent();
        remove_namespace(&self.netns);
    }
}

/// Ends every process in network namespace `ns` (SIGTERM, SIGKILL after 10 s)
/// and deletes it. Only for namespaces a fleet created: everything inside is its own.
fn remove_namespace(ns: &str) {
    let pids = || -> Vec<String> {
        sh(&["ip", "netns", "pids", ns]).unwrap_or_default().split_whitespace().map(str::to_owned).collect()
    };
    for pid in pids() {
        let _ = Command::new("kill").arg(&pid).output();
    }
    let start = Instant::now();
    while !pids().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in pids() {
        let _ = Command::new("kill").args(["-KILL", &pid]).output();
    }
    let start = Instant::now();
    while !pids().is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = sh(&["ip", "netns", "del", ns]);
}

/// Removes what fleets whose test process died left: their namespaces
/// (`kfl-<tag>-<n>`, with every process inside), fabric bridge (`kfb<tag>`)
/// and host directories.
fn reap_dead_fleets() {
    let Ok(entries) = std::fs::read_dir(REGISTRY) else { return };
    for entry in entries.flatten() {
        let tag = entry.file_name().to_string_lossy().into_owned();
        if tag.len() != 6 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join("owner")).unwrap_or_default();
        let alive = !owner.trim().is_empty() && Path::new(&format!("/proc/{}", owner.trim())).exists();
        if alive {
            continue;
        }
        let namespaces = sh(&["ip", "netns", "list"]).unwrap_or_default();
        for ns in namespaces.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(&format!("kfl-{tag}-")) {
                eprintln!("reaping namespace {ns} of a dead fleet");
                remove_namespace(ns);
            }
        }
        let _ = sh(&["ip", "link", "del", &format!("kfb{tag}")]);
        // The hosts' directories (`/var/tmp/kumo-fl<tag>h<n>-*`: libvirt state, agent state, logs).
        if let Ok(dirs) = std::fs::read_dir("/var/tmp") {
            for dir in dirs.flatten() {
                if dir.file_name().to_string_lossy().starts_with(&format!("kumo-fl{tag}h")) {
                    let _ = std::fs::remove_dir_all(dir.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
