//! DHCP for tenant networks: one dnsmasq per network on this host, bound to
//! the network's bridge, leasing each known MAC its fixed IP and nothing to
//! anyone else (no DNS either). State lives under one directory, one
//! subdirectory per network (`hosts`, `pid`, `leases`, `log`); the pid file is
//! the source of truth, so a restarted agent adopts the dnsmasq it finds.
//!
//! Leases follow the hosts: dnsmasq keeps a lease for its whole lifetime (1 h)
//! even after its MAC left the hosts file, and refuses that address to anyone
//! else ("not using configured address ... because it is leased to ..."). Kumo
//! frees an address as soon as the instance holding it is gone and may hand
//! it to a new port at once, so when a lease no longer matches a host entry,
//! [`Dhcp::ensure`] stops dnsmasq, drops such leases from its lease file and
//! starts it again (it reads leases only at start; SIGHUP rereads the hosts
//! file only). Leases that still match are kept across the restart.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kumo_wire::network::DesiredNetwork;
use kumo_wire::NetworkId;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The dnsmasq binary (Debian's `dnsmasq-base`).
const DNSMASQ: &str = "dnsmasq";

/// One host entry: `mac` gets `ip` (and `hostname`), nobody else does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    /// Lowercase `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// The fixed address, inside the network's CIDR.
    pub ip: Ipv4Addr,
    /// The instance's hostname (characters outside `[a-zA-Z0-9-]` are dropped).
    pub hostname: String,
}

/// One lease in dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// When it expires (seconds since the epoch; 0: never).
    pub expires: u64,
    /// The client's MAC, lowercase.
    pub mac: String,
    /// The address leased.
    pub ip: Ipv4Addr,
}

/// Reads dnsmasq's lease file format (`expiry mac ip hostname client-id`),
/// skipping what it cannot parse (IPv6 `duid` lines and the like).
pub fn parse_leases(text: &str) -> Vec<Lease> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let expires = words.next()?.parse().ok()?;
            let mac = words.next()?.to_ascii_lowercase();
            let ip = words.next()?.parse().ok()?;
            Some(Lease { expires, mac, ip })
        })
        .collect()
}

/// Errors of the DHCP supervisor.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// A state file could not be read or written.
    #[error("DHCP state file {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// dnsmasq could not be executed at all.
    #[error("cannot run {DNSMASQ} (install dnsmasq-base)")]
    Spawn(#[source] std::io::Error),
    /// dnsmasq exited with an error instead of starting.
    #[error("dnsmasq for network {network} did not start: {message}")]
    Start {
        /// The network.
        network: NetworkId,
        /// dnsmasq's own complaint.
        message: String,
    },
    /// A host entry is malformed; nothing was changed.
    #[error("DHCP host entry for network {network} rejected: {problem}; nothing was changed")]
    InvalidHost {
        /// The network.
        network: NetworkId,
        /// What is wrong.
        problem: String,
    },
    /// dnsmasq could not be signalled.
    #[error("cannot signal dnsmasq (pid {pid}) of network {network}")]
    Signal {
        /// The network.
        network: NetworkId,
        /// Its pid.
        pid: i32,
        /// The cause.
        #[source]
        source: nix::errno::Errno,
    },
    /// dnsmasq did not exit after SIGTERM and SIGKILL.
    #[error("dnsmasq (pid {pid}) of network {network} did not exit")]
    StopTimeout {
        /// The network.
        network: NetworkId,
        /// Its pid.
        pid: i32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DhcpError + '_ {
    move |source| DhcpError::Io { path: path.to_owned(), source }
}

/// The dnsmasq supervisor: one dnsmasq per network, state under `state_dir`.
#[derive(Debug, Clone)]
pub struct Dhcp {
    state_dir: PathBuf,
    /// Serialises ensure/stop per network within this process (never two copies).
    locks: Arc<std::sync::Mutex<HashMap<NetworkId, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Dhcp {
    /// A supervisor keeping its state under `state_dir` (created on first use).
    pub fn new(state_dir: PathBuf) -> Self {
        Self { state_dir, locks: Arc::default() }
    }

    /// Where a network's files live.
    pub fn network_dir(&self, id: &NetworkId) -> PathBuf {
        self.state_dir.join(id.as_str())
    }

    fn lock(&self, id: &NetworkId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(id.clone()).or_default().clone()
    }

    /// The pid of the network's running dnsmasq, if it runs (checked against
    /// `/proc/PID/cmdline`, so a stale pid file or a recycled pid is not taken
    /// for it).
    pub fn pid(&self, id: &NetworkId) -> Option<i32> {
        let dir = self.network_dir(id);
        let pid: i32 = std::fs::read_to_string(dir.join("pid")).ok()?.trim().parse().ok()?;
        let cmdline = read_cmdline(pid)?;
        let pid_arg = format!("--pid-file={}", dir.join("pid").display());
        let ours = cmdline.first().is_some_and(|a| a.ends_with(DNSMASQ)) && cmdline.contains(&pid_arg);
        ours.then_some(pid)
    }

    /// Idempotent: writes the hosts file (only these MACs get leases, each
    /// its fixed IP; no DNS), starts dnsmasq bound to `bridge` if it does not
    /// run (adopting a running one from its pid file), restarts it if its
    /// options changed, else sends SIGHUP when the hosts changed.
    pub async fn ensure(&self, net: &DesiredNetwork, bridge: &str, hosts: &[DhcpHost]) -> Result<(), DhcpError> {
        let hosts_text = hosts_file(net, hosts)?;
        let lock = self.lock(&net.id);
        let _guard = lock.lock().await;

        let dir = self.network_dir(&net.id);
        for d in [&self.state_dir, &dir] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
            // dnsmasq drops to `nobody` and rereads the hosts file on SIGHUP.
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).map_err(io_err(d))?;
        }
        let log = dir.join("log");
        match crate::log_cap::cap(&log, LOG_MAX, LOG_KEEP) {
            Ok(true) => tracing::info!(network = %net.id.as_str(), "dnsmasq log cut to its tail"),
            Ok(false) => {}
            Err(e) => tracing::warn!(network = %net.id.as_str(), error = %e, "could not cap the dnsmasq log"),
        }
        let hosts_path = dir.join("hosts");
        let changed = std::fs::read_to_string(&hosts_path).ok().as_deref() != Some(hosts_text.as_str());
        if changed {
            let tmp = dir.join("hosts.tmp");
            std::fs::write(&tmp, &hosts_text).map_err(io_err(&tmp))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &hosts_path).map_err(io_err(&hosts_path))?;
        }

        let args = dnsmasq_args(net, bridge, &dir);
        let stale = stale_leases(&self.leases(&net.id), hosts);
        if let Some(pid) = self.pid(&net.id) {
            let same_options = read_cmdline(pid).is_some_and(|c| c.get(1..) == Some(args.as_slice()));
            if same_options && stale.is_empty() {
                if changed {
                    kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|source| DhcpError::Signal {
                        network: net.id.clone(),
                        pid,
                        source,
                    })?;
                }
                return Ok(());
            }
            if same_options {
                tracing::info!(network = %net.id.as_str(), pid, released = stale.len(),
                    "leases of removed ports released; restarting dnsmasq");
            } else {
                tracing::info!(network = %net.id.as_str(), pid, "dnsmasq options changed; restarting it");
            }
            self.terminate(&net.id, pid).await?;
        }
        self.drop_leases(&dir, &stale)?;
        self.start(net, &args, &dir).await
    }

    /// The leases dnsmasq recorded for the network (none if it never ran).
    pub fn leases(&self, id: &NetworkId) -> Vec<Lease> {
        std::fs::read_to_string(self.network_dir(id).join("leases")).map(|t| parse_leases(&t)).unwrap_or_default()
    }

    /// Rewrites the lease file without `stale` (dnsmasq must not run).
    fn drop_leases(&self, dir: &Path, stale: &[Lease]) -> Result<(), DhcpError> {
        if stale.is_empty() {
            return Ok(());
        }
        let path = dir.join("leases");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let kept: String = text
            .lines()
            // By MAC and address: dnsmasq may have renewed it meanwhile (new expiry).
            .filter(|line| {
                parse_leases(line).first().is_none_or(|l| !stale.iter().any(|s| s.mac == l.mac && s.ip == l.ip))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let tmp = dir.join("leases.tmp");
        std::fs::write(&tmp, kept).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    async fn start(&self, net: &DesiredNetwork, args: &[String], dir: &Path) -> Result<(), DhcpError> {
        // dnsmasq daemonises; its parent exits once the daemon is ready, non-zero
        // with the reason on stderr when it cannot start.
        // Bounded: a dnsmasq that never daemonises must not stall the agent's networking.
        let run = tokio::process::Command::new(DNSMASQ).args(args).kill_on_drop(true).output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
            .await
            .map_err(|_| DhcpError::Start {
                network: net.id.clone(),
                message: "dnsmasq did not start within 30 s and was killed".into(),
            })?
            .map_err(DhcpError::Spawn)?;
        if !out.status.success() {
            let mut message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if message.is_empty() {
                message = format!("exit status {}", out.status);
            }
            return Err(DhcpError::Start { network: net.id.clone(), message });
        }
        // The pid file is written by the daemon; wait for it briefly.
        for _ in 0..50 {
            if self.pid(&net.id).is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(DhcpError::Start {
            network: net.id.clone(),
            message: format!("no live dnsmasq behind {}", dir.join("pid").display()),
        })
    }

    async fn terminate(&self, id: &NetworkId, pid: i32) -> Result<(), DhcpError> {
        let signal_err = |source| DhcpError::Signal { network: id.clone(), pid, source };
        match kill(Pid::from_raw(pid), Signal::SIGTERM) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(signal_err(e)),
        }
        for round in 0..100 {
            if self.pid(id).is_none() {
                return Ok(());
            }
            if round == 60 {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(DhcpError::StopTimeout { network: id.clone(), pid })
    }

    /// Idempotent: stops the network's dnsmasq and removes its state.
    pub async fn stop(&self, id: &NetworkId) -> Result<(), DhcpError> {
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        if let Some(pid) = self.pid(id) {
            self.terminate(id, pid).await?;
        }
        let dir = self.network_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    /// The networks whose dnsmasq runs (including ones started before this
    /// process: adoption after an agent restart), sorted.
    pub fn running(&self) -> Vec<NetworkId> {
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else {
            return Vec::new();
        };
        let mut ids: Vec<NetworkId> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<NetworkId>().ok())
            .filter(|id| self.pid(id).is_some())
            .collect();
        ids.sort();
        ids
    }
}

/// `/proc/PID/cmdline` split at NULs; `None` if the process is gone or a zombie.
fn read_cmdline(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> =
        raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    (!args.is_empty()).then_some(args)
}

/// The leases that no host entry backs any more: their MAC is gone, or it
/// now has another address.
fn stale_leases(leases: &[Lease], hosts: &[DhcpHost]) -> Vec<Lease> {
    leases
        .iter()
        .filter(|l| !hosts.iter().any(|h| h.mac.eq_ignore_ascii_case(&l.mac) && h.ip == l.ip))
        .cloned()
        .collect()
}

/// The size past which [`Dhcp::ensure`] cuts a network's dnsmasq log.
pub const LOG_MAX: u64 = 1 << 20;
/// How much of the log's tail it keeps then.
pub const LOG_KEEP: u64 = 256 << 10;

/// dnsmasq's options for one network (without argv\[0\]).
fn dnsmasq_args(net: &DesiredNetwork, bridge: &str, dir: &Path) -> Vec<String> {
    let cidr = net.cidr.trunc();
    let mut args = vec![
        "--conf-file=/dev/null".to_owned(),
        "--bind-interfaces".to_owned(),
        format!("--interface={bridge}"),
        "--except-interface=lo".to_owned(),
        // No DNS service at all.
        "--port=0".to_owned(),
        // Only addresses from host entries, and only for known MACs.
        format!("--dhcp-range={},static,{},1h", cidr.network(), cidr.netmask()),
        "--dhcp-ignore=tag:!known".to_owned(),
        "--dhcp-authoritative".to_owned(),
        format!("--dhcp-hostsfile={}", dir.join("hosts").display()),
        format!("--dhcp-option=3,{}", net.gateway),
    ];
    if !net.dns_servers.is_empty() {
        let dns: Vec<String> = net.dns_servers.iter().map(ToString::to_string).collect();
        args.push(format!("--dhcp-option=6,{}", dns.join(",")));
    }
    args.extend([
        format!("--pid-file={}", dir.join("pid").display()),
        format!("--dhcp-leasefile={}", dir.join("leases").display()),
        format!("--log-facility={}", dir.join("log").display()),
        "--log-dhcp".to_owned(),
    ]);
    args
}

/// The `--dhcp-hostsfile` content, after checking every entry.
fn hosts_file(net: &DesiredNetwork, hosts: &[DhcpHost]) -> Result<String, DhcpError> {
    let invalid = |problem: String| DhcpError::InvalidHost { network: net.id.clone(), problem };
    let mut text = String::new();
    let mut macs = std::collections::HashSet::new();
    let mut ips = std::collections::HashSet::new();
    let mut sorted: Vec<&DhcpHost> = hosts.iter().collect();
    sorted.sort_by(|a, b| a.mac.cmp(&b.mac));
    for host in sorted {
        let mac_ok = host.mac.len() == 17
            && host.mac.split(':').count() == 6
            && host.mac.split(':').all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
        if !mac_ok {
            return Err(invalid(format!("'{}' is not a MAC address (xx:xx:xx:xx:xx:xx)", host.mac)));
        }
        let mac = host.mac.to_ascii_lowercase();
        if !net.cidr.contains(&host.ip) || host.ip == net.cidr.network() || host.ip == net.cidr.broadcast() {
            return Err(invalid(format!("{} is not a host address of {}", host.ip, net.cidr)));
        }
        if host.ip == net.gateway {
            return Err(invalid(format!("{} is the gateway's address", host.ip)));
        }
        if !macs.insert(mac.clone()) {
            return Err(invalid(format!("MAC {mac} appears twice")));
        }
        if !ips.insert(host.ip) {
            return Err(invalid(format!("{} is given to two MACs", host.ip)));
        }
        let name: String = host.hostname.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(63).collect();
        let name = name.trim_matches('-');
        if name.is_empty() {
            let _ = writeln!(text, "{mac},{}", host.ip);
        } else {
            let _ = writeln!(text, "{mac},{},{name}", host.ip);
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> DesiredNetwork {
        DesiredNetwork {
            id: "net-0123456789abcdef0".parse().expect("id"),
            vlan_id: 100,
            cidr: "10.1.2.0/24".parse().expect("cidr"),
            gateway: "10.1.2.1".parse().expect("ip"),
            dns_servers: vec!["10.1.2.53".parse().expect("ip")],
        }
    }

    fn host(mac: &str, ip: &str, name: &str) -> DhcpHost {
        DhcpHost { mac: mac.into(), ip: ip.parse().expect("ip"), hostname: name.into() }
    }

    #[test]
    fn hosts_file_is_sorted_and_sanitised() {
        let text = hosts_file(
            &net(),
            &[host("52:54:00:00:00:02", "10.1.2.20", "web_1.example"), host("52:54:00:00:00:01", "10.1.2.10", "db")],
        )
        .expect("valid");
        assert_eq!(text, "52:54:00:00:00:01,10.1.2.10,db\n52:54:00:00:00:02,10.1.2.20,web1example\n");
    }

    #[test]
    fn bad_hosts_are_refused() {
        let cases = [
            (vec![host("52:54:00:00:00", "10.1.2.10", "a")], "is not a MAC address"),
            (vec![host("52:54:00:00:00:0g", "10.1.2.10", "a")], "is not a MAC address"),
            (vec![host("52:54:00:00:00:01", "10.9.2.10", "a")], "is not a host address of 10.1.2.0/24"),
            (vec![host("52:54:00:00:00:01", "10.1.2.255", "a")], "is not a host address"),
            (vec![host("52:54:00:00:00:01", "10.1.2.1", "a")], "is the gateway's address"),
            (
                vec![host("52:54:00:00:00:01", "10.1.2.10", "a"), host("52:54:00:00:00:01", "10.1.2.11", "b")],
                "appears twice",
            ),
            (
                vec![host("52:54:00:00:00:01", "10.1.2.10", "a"), host("52:54:00:00:00:02", "10.1.2.10", "b")],
                "given to two MACs",
            ),
        ];
        for (hosts, expected) in cases {
            let err = hosts_file(&net(), &hosts).expect_err(expected).to_string();
            assert!(err.contains(expected) && err.contains("nothing was changed"), "{err}");
        }
    }

    #[test]
    fn leases_without_a_matching_host_are_stale() {
        let leases = parse_leases(
            "1700000000 52:54:00:00:00:01 10.1.2.10 a *\n0 52:54:00:00:00:02 10.1.2.11 * 01:52:54:00:00:00:02\n\
             duid 00:01:00:01\n1700000000 52:54:00:00:00:03 10.1.2.12 c *\n",
        );
        assert_eq!(leases.len(), 3, "{leases:?}");
        assert_eq!(
            leases[1],
            Lease { expires: 0, mac: "52:54:00:00:00:02".into(), ip: "10.1.2.11".parse().expect("ip") }
        );
        // 01 keeps its address, 02 is gone, 03 now has another one.
        let hosts = [host("52:54:00:00:00:01", "10.1.2.10", "a"), host("52:54:00:00:00:03", "10.1.2.13", "c")];
        let stale: Vec<String> = stale_leases(&leases, &hosts).into_iter().map(|l| l.mac).collect();
        assert_eq!(stale, ["52:54:00:00:00:02", "52:54:00:00:00:03"]);
    }

    #[test]
    fn dnsmasq_serves_only_known_macs_and_no_dns() {
        let args = dnsmasq_args(&net(), "kbr0123456789ab", Path::new("/state/net-x"));
        for expected in [
            "--interface=kbr0123456789ab",
            "--bind-interfaces",
            "--port=0",
            "--dhcp-range=10.1.2.0,static,255.255.255.0,1h",
            "--dhcp-ignore=tag:!known",
            "--dhcp-option=3,10.1.2.1",
            "--dhcp-option=6,10.1.2.53",
            "--dhcp-hostsfile=/state/net-x/hosts",
            "--pid-file=/state/net-x/pid",
            "--conf-file=/dev/null",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} missing from {args:?}");
        }
    }
}
