//! Helpers for the end-to-end tests: start the real `kumo-api` and `kumo-agent`
//! binaries against real libvirtd, drive them with the real `kumo` CLI, and
//! look at what the guests print. Logs stay in the test's temp dir, and are
//! printed when a test fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub mod fleet;

/// Whether the end-to-end tests should run (`scripts/test.sh` sets this after
/// starting libvirtd and building the tiny image).
pub fn enabled() -> bool {
    if std::env::var("KUMO_E2E").is_ok_and(|v| v == "1") {
        return true;
    }
    eprintln!("end-to-end test skipped: run scripts/test.sh (it sets KUMO_E2E=1 after starting libvirtd)");
    false
}

/// Where cargo put the workspace's binaries (`KUMO_BIN_DIR` overrides, e.g. for release builds).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KUMO_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join(name)
}

/// The tiny image built by `scripts/build-tiny-image.sh`.
pub fn tiny_image_dir() -> PathBuf {
    PathBuf::from(std::env::var("KUMO_TEST_IMAGE_DIR").unwrap_or_else(|_| "/var/lib/kumo/tiny-image".into()))
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process that is ended (by its PID) when dropped.
#[derive(Debug)]
pub struct Process {
    /// The child.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Process {
    /// Starts `cmd` with its output appended to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Result<Self> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        cmd.stdout(out.try_clone()?).stderr(out).stdin(Stdio::null());
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self { child, log })
    }

    /// Sends a signal to this process only.
    pub fn signal(&self, sig: &str) -> Result<()> {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -{sig} {} failed", self.child.id());
        }
        Ok(())
    }

    /// Ends the process and waits for it.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.signal("CONT");
            let _ = self.signal("TERM");
            for _ in 0..50 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A controller and one agent on this machine, with a logged-in CLI.
#[derive(Debug)]
pub struct Stack {
    /// Holds configs, state and logs.
    pub dir: tempfile::TempDir,
    /// The controller's URL.
    pub endpoint: String,
    /// The controller process.
    pub api: Process,
    /// The agent process.
    pub agent: Option<Process>,
    /// The agent's host name (unique per test).
    pub host_name: String,
    /// The agent's state directory.
    pub agent_state: PathBuf,
    /// The agent's nftables table name (unique per stack, so agents of
    /// concurrent tests never touch each other's rules).
    pub nft_table: String,
    /// With [`Options::tls`]: the cloud's CA certificate, which the agent,
    /// the controller (for agents) and the CLI trust.
    pub ca_cert: Option<PathBuf>,
    agent_config: PathBuf,
    api_config: PathBuf,
    instances: Vec<String>,
    /// With [`Options::test_driver_host`]: the agent's network namespace.
    netns: Option<String>,
}

/// Extra controller settings (TOML lines).
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `database_url`, when not SQLite.
    pub database_url: Option<String>,
    /// Seconds of silence before a host is unreachable.
    pub host_timeout_secs: Option<u64>,
    /// More controller settings, as TOML lines (`{ENDPOINT}`: the controller's URL).
    pub controller_extra: String,
    /// More agent settings, as TOML lines.
    pub agent_extra: String,
    /// Serve the controller and the agent over TLS with a CA and certificates
    /// made by `kumo_api::tls::generate` (in `<dir>/tls`).
    pub tls: bool,
    /// A host without guests: the agent runs on libvirt's test driver, in a
    /// network namespace this stack creates (joined to the host by a veth
    /// pair that carries only controller<->agent traffic), so its bridges,
    /// dnsmasq, nftables and metadata listener are real but touch nothing of
    /// the machine's own networking. Thousands of steps take minutes.
    pub test_driver_host: bool,
    /// Start only the controller, listening on this address instead of
    /// loopback; the hosts come from elsewhere (see [`fleet::Fleet`]).
    pub controller_only_on: Option<String>,
}

impl Stack {
    /// Starts the controller and the agent, logs the CLI in as admin.
    pub fn start(opts: Options) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("kumo-e2e-").tempdir_in("/var/tmp")?;
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let api_port = free_port()?;
        let agent_port = free_port()?;
        let tls_dir = dir.path().join("tls");
        let (scheme, ca_cert) = if opts.tls {
            let controller = kumo_api::tls::generate(&tls_dir, "controller", &[])?;
            kumo_api::tls::generate(&tls_dir, "agent", &[])?;
            ("https", Some(controller.ca_cert))
        } else {
            ("http", None)
        };
        let host_name = format!("e2e-{}", &kumo_wire::HostId::generate().as_str()[5..13]);
        let (netns, api_ip, agent_ip) = if let Some(ip) = &opts.controller_only_on {
            (None, ip.clone(), ip.clone())
        } else if opts.test_driver_host {
            let (ns, api_ip, agent_ip) = test_driver_namespace(&host_name)?;
            (Some(ns), api_ip, agent_ip)
        } else {
            (None, "127.0.0.1".to_owned(), "127.0.0.1".to_owned())
        };
        let endpoint = format!("{scheme}://{api_ip}:{api_port}");
        let data = dir.path().join("controller");
        let mut api_toml = format!(
            "listen = '{api_ip}:{api_port}'\ndata_dir = '{}'\nadmin_password = 'e2e-admin-pass'\njoin_token = 'e2e-join'\n\
             stopping_deadline_secs = 120\nrebooting_deadline_secs = 120\n",
            data.display()
        );
        if let Some(url) = &opts.database_url {
            api_toml.push_str(&format!("database_url = '{url}'\n"));
        }
        if let Some(t) = opts.host_timeout_secs {
            api_toml.push_str(&format!("host_timeout_secs = {t}\n"));
        }
        if opts.tls {
            api_toml.push_str(&format!(
                "tls_cert_file = '{0}/controller.pem'\ntls_key_file = '{0}/controller-key.pem'\nagent_ca_file = '{0}/ca.pem'\n",
                tls_dir.display()
            ));
        }
        // `{ENDPOINT}` in the extra settings is this controller's URL (a replica's `replica_url`).
        api_toml.push_str(&opts.controller_extra.replace("{ENDPOINT}", &endpoint));
        let api_config = dir.path().join("controller.toml");
        std::fs::write(&api_config, api_toml)?;
        let api = spawn_api(&api_config, dir.path())?;
        wait_http(&format!("{endpoint}/healthz"), Duration::from_secs(60), ca_cert.as_deref())
            .context("controller did not come up")?;

        let nft_table = format!("ke2e{}", &host_name[4..]);
        let mut nft_line =
            if opts.agent_extra.contains("nft_table") { String::new() } else { format!("nft_table = '{nft_table}'\n") };
        if opts.tls {
            nft_line.push_str(&format!(
                "controller_ca_file = '{0}/ca.pem'\ntls_cert_file = '{0}/agent.pem'\ntls_key_file = '{0}/agent-key.pem'\n",
                tls_dir.display()
            ));
        }
        let agent_state = dir.path().join("agent");
        let agent_config = dir.path().join("agent.toml");
        let libvirt_uri = if netns.is_some() {
            let node = dir.path().join("test-node.xml");
            std::fs::write(
                &node,
                "<node>\n  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>\
                 <cores>16</cores><threads>1</threads></cpu>\n  <memory>33554432</memory>\n</node>\n",
            )?;
            format!("test://{}", node.display())
        } else {
            "qemu:///system".to_owned()
        };
        std::fs::write(
            &agent_config,
            format!(
                "controller_url = '{endpoint}'\njoin_token = 'e2e-join'\nname = '{host_name}'\n\
                 listen = '{agent_ip}:{agent_port}'\nlibvirt_uri = '{libvirt_uri}'\ndomain_type = 'qemu'\n\
                 state_dir = '{}'\nshutdown_timeout_secs = 30\ndisk_gib = 50\n{nft_line}{}",
                agent_state.display(),
                opts.agent_extra
            ),
        )?;
        let mut stack = Self {
            dir,
            endpoint,
            api,
            agent: None,
            host_name,
            agent_state,
            nft_table,
            ca_cert,
            agent_config,
            api_config,
            instances: Vec::new(),
            netns,
        };
        if opts.controller_only_on.is_none() {
            stack.start_agent()?;
        }
        stack.kumo_ok(&[
            "login",
            "--endpoint",
            &stack.endpoint.clone(),
            "--username",
            "admin",
            "--password",
            "e2e-admin-pass",
        ])?;
        if opts.controller_only_on.is_some() {
            return Ok(stack);
        }
        stack.wait_until(Duration::from_secs(60), "the host to register", |s| {
            let hosts = s.kumo_json(&["host", "list"])?;
            Ok(hosts["items"].as_array().is_some_and(|h| h.iter().any(|h| h["name"] == s.host_name.as_str())))
        })?;
        Ok(stack)
    }

    /// Starts (or restarts) the agent process.
    pub fn start_agent(&mut self) -> Result<()> {
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the agent: the child's PID is the agent's.
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(bin("kumo-agent"));
                cmd
            }
            None => Command::new(bin("kumo-agent")),
        };
        cmd.arg("--config")
            .arg(&self.agent_config)
            .env("RUST_LOG", "info,kumo_agent=debug")
            .env("KUMO_LOG", "info,kumo_agent=debug");
        self.agent = Some(Process::spawn(cmd, self.dir.path().join("agent.log"))?);
        Ok(())
    }

    /// Restarts the agent (same state directory, so same host) with settings
    /// overridden through its `KUMO_AGENT_*` environment, e.g. other controller URLs.
    pub fn restart_agent_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        if let Some(agent) = &mut self.agent {
            agent.stop();
        }
        let mut cmd = Command::new(bin("kumo-agent"));
        cmd.arg("--config").arg(&self.agent_config).env("KUMO_LOG", "info,kumo_agent=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.agent = Some(Process::spawn(cmd, self.dir.path().join("agent.log"))?);
        Ok(())
    }

    /// Stops the controller, runs `while_down`, and starts it again.
    pub fn restart_api(&mut self, while_down: impl FnOnce(&Self)) -> Result<()> {
        self.api.stop();
        while_down(self);
        self.api = spawn_api(&self.api_config, self.dir.path())?;
        wait_http(&format!("{}/healthz", self.endpoint), Duration::from_secs(60), self.ca_cert.as_deref())
            .context("controller did not come back")
    }

    /// Stops the controller and starts it again with `env` added to its
    /// environment (e.g. the test-only `KUMO_TEST_FAULT_POINT`); waits until it answers.
    pub fn respawn_api_with(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.api.stop();
        let mut cmd = Command::new(bin("kumo-api"));
        cmd.arg("--config").arg(&self.api_config).env("KUMO_LOG", "info,kumo_api=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.api = Process::spawn(cmd, self.dir.path().join("controller.log"))?;
        wait_http(&format!("{}/healthz", self.endpoint), Duration::from_secs(60), self.ca_cert.as_deref())
            .context("controller did not come back")
    }

    /// Runs the CLI; returns its output whatever the exit code.
    pub fn kumo(&self, args: &[&str]) -> Result<Output> {
        self.cli(self.dir.path().join("cli.toml")).args(args).output().context("running kumo")
    }

    /// The `kumo` command with `config` as its config file, trusting the
    /// stack's CA when it serves TLS.
    fn cli(&self, config: PathBuf) -> Command {
        let mut cmd = Command::new(bin("kumo"));
        cmd.env("KUMO_CONFIG", config).env_remove("KUMO_ENDPOINT").env_remove("KUMO_TOKEN").stdin(Stdio::null());
        match &self.ca_cert {
            Some(ca) => cmd.env("KUMO_CA_CERT", ca),
            None => cmd.env_remove("KUMO_CA_CERT"),
        };
        cmd
    }

    /// A blocking HTTP client that trusts the stack's CA (when it has one).
    pub fn http_client(&self, timeout: Duration) -> Result<reqwest::blocking::Client> {
        http_client(timeout, self.ca_cert.as_deref())
    }

    /// Runs the CLI with another config file (another user, see [`Stack::login_as`]).
    pub fn kumo_as(&self, user: &str, args: &[&str]) -> Result<Output> {
        self.cli(self.dir.path().join(format!("cli-{user}.toml"))).args(args).output().context("running kumo")
    }

    /// [`Stack::kumo_as`] with `--output json`, failing unless it exits 0.
    pub fn kumo_json_as(&self, user: &str, args: &[&str]) -> Result<Value> {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let out = self.kumo_as(user, &full)?;
        if !out.status.success() {
            bail!("kumo {args:?} as {user} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("kumo {args:?} printed no JSON"))
    }

    /// Creates project `project` and a member `user` in it (as admin), and
    /// logs `user` in with their own CLI config.
    pub fn login_as(&self, user: &str, project: &str) -> Result<()> {
        self.kumo_ok(&["project", "create", project])?;
        self.kumo_ok(&["user", "create", user, "--project", project, "--password", "e2e-user-pass"])?;
        let out = self.kumo_as(
            user,
            &["login", "--endpoint", &self.endpoint, "--username", user, "--password", "e2e-user-pass"],
        )?;
        if !out.status.success() {
            bail!("login as {user} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Calls the native API as the admin CLI's logged-in user (for calls the
    /// CLI does not offer); `body` None sends no body. Fails unless 2xx.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.api_as("", method, path, body)
    }

    /// [`Stack::api`] as another user (`""` = admin).
    pub fn api_as(&self, user: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let file = if user.is_empty() { "cli.toml".to_owned() } else { format!("cli-{user}.toml") };
        let config: toml::Table = std::fs::read_to_string(self.dir.path().join(file))?.parse()?;
        let token = config.get("token").and_then(|t| t.as_str()).context("the CLI config holds no token")?;
        let client = self.http_client(Duration::from_secs(30))?;
        let mut req = client.request(method.parse()?, format!("{}{path}", self.endpoint)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send()?;
        let status = resp.status();
        let text = resp.text()?;
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {text}");
        }
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }

    /// Runs the CLI and fails unless it exits 0; returns stdout.
    pub fn kumo_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kumo(args)?;
        if !out.status.success() {
            bail!(
                "kumo {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the CLI with `--output json` and parses stdout.
    pub fn kumo_json(&self, args: &[&str]) -> Result<Value> {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let out = self.kumo_ok(&full)?;
        serde_json::from_str(&out).with_context(|| format!("kumo {args:?} printed no JSON: {out}"))
    }

    /// Registers the tiny image as the public default image `tiny`.
    pub fn register_tiny_image(&self) -> Result<Value> {
        let dir = tiny_image_dir();
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.img");
        self.kumo_json(&[
            "image",
            "register",
            "--name",
            "tiny",
            "--kernel",
            &kernel.to_string_lossy(),
            "--initrd",
            &initrd.to_string_lossy(),
            "--public",
        ])
    }

    /// Records an instance id so that it is cleaned up even if the test fails.
    pub fn track(&mut self, id: &str) {
        self.instances.push(id.to_owned());
    }

    /// Polls `check` every 500 ms until it returns true.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Self) -> Result<bool>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last_err = None;
        while start.elapsed() < timeout {
            match check(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_err = Some(e),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})")
    }

    /// The instance's console output.
    pub fn console(&self, id: &str) -> Result<String> {
        self.kumo_ok(&["instance", "console", id])
    }

    /// Waits until the instance's console shows `needle`; returns the console.
    pub fn wait_console(&self, id: &str, needle: &str, timeout: Duration) -> Result<String> {
        let mut last = String::new();
        let start = Instant::now();
        while start.elapsed() < timeout {
            last = self.console(id)?;
            if last.contains(needle) {
                return Ok(last);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let tail: Vec<&str> = last.lines().rev().take(15).collect();
        bail!("timed out after {timeout:?} waiting for '{needle}' on the console of {id}; last lines: {tail:?}")
    }

    /// How many times the guest printed its ready marker.
    pub fn markers(&self, id: &str) -> Result<usize> {
        Ok(self.console(id)?.matches(&format!("KUMO-READY instance-id={id} ")).count())
    }

    /// An instance's JSON.
    pub fn instance(&self, id: &str) -> Result<Value> {
        self.kumo_json(&["instance", "show", id])
    }

    /// `virsh domstate` of an instance's domain, or None when there is no domain.
    pub fn domstate(&self, id: &str) -> Option<String> {
        let out =
            Command::new("virsh").args(["-c", "qemu:///system", "domstate", &format!("kumo-{id}")]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The controller's and agent's logs, for failure reports.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let tail =
            |s: String| s.lines().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!(
            "--- controller.log ---\n{}\n--- agent.log ---\n{}",
            tail(read("controller.log")),
            tail(read("agent.log"))
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if let Some(agent) = &mut self.agent {
            agent.stop();
        }
        self.api.stop();
        // Whatever the test left behind on the host: only this test's domains.
        for id in &self.instances {
            let name = format!("kumo-{id}");
            let _ = Command::new("virsh").args(["-c", "qemu:///system", "destroy", &name]).output();
            let _ = Command::new("virsh").args(["-c", "qemu:///system", "undefine", &name]).output();
        }
        self.remove_networking();
        if let Some(ns) = &self.netns {
            // Its bridges, nftables and the veth's far end go with it.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Creates network namespace `kumo-<host>` and a veth pair joining it to the
/// host on a /30 of 10.253.0.0/16 picked from the host name; returns the
/// namespace and the host's and the namespace's addresses.
fn test_driver_namespace(host_name: &str) -> Result<(String, String, String)> {
    let tag = &host_name[4..];
    let ns = format!("kumo-{tag}");
    let (outer, inner) = (format!("kvo{tag}"), format!("kvi{tag}"));
    let n = u32::from_str_radix(&tag[..4], 16).unwrap_or(0) % 16_384;
    let (third, fourth) = (n / 64, (n % 64) * 4);
    let (api_ip, agent_ip) = (format!("10.253.{third}.{}", fourth + 1), format!("10.253.{third}.{}", fourth + 2));
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new(args[0]).args(&args[1..]).output()?;
        if !out.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run(&["ip", "netns", "add", &ns])?;
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
    run(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns])?;
    run(&["ip", "addr", "add", &format!("{api_ip}/30"), "dev", &outer])?;
    run(&["ip", "link", "set", &outer, "up"])?;
    run(&["ip", "-n", &ns, "addr", "add", &format!("{agent_ip}/30"), "dev", &inner])?;
    run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
    Ok((ns, api_ip, agent_ip))
}

impl Stack {
    /// Removes what this stack's agent plumbed and a failed test left: its
    /// dnsmasq processes (by the pid files in its state directory), the
    /// bridges of the networks it recorded, and its nftables tables.
    fn remove_networking(&self) {
        let net_dir = self.agent_state.join("network");
        for pid_file in files_under(&net_dir.join("dhcp")).into_iter().filter(|f| f.ends_with("pid")) {
            let Ok(pid) = std::fs::read_to_string(&pid_file) else { continue };
            let pid = pid.trim();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&pid_file.to_string_lossy().into_owned()) {
                let _ = Command::new("kill").arg(pid).output();
            }
        }
        let plumbed = std::fs::read_to_string(net_dir.join("plumbed-networks")).unwrap_or_default();
        for id in plumbed.lines().filter_map(|l| l.trim().strip_prefix("net-")) {
            if let Some(hex) = id.get(..12) {
                let _ = Command::new("ip").args(["link", "del", &format!("kbr{hex}")]).output();
            }
        }
        for family in ["bridge", "inet", "ip"] {
            let _ = Command::new("nft").args(["delete", "table", family, &self.nft_table]).output();
        }
    }
}

/// Every file (not directory) under `dir`, recursively; empty when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn spawn_api(config: &Path, dir: &Path) -> Result<Process> {
    let mut cmd = Command::new(bin("kumo-api"));
    cmd.arg("--config").arg(config).env("KUMO_LOG", "info,kumo_api=debug");
    Process::spawn(cmd, dir.join("controller.log"))
}

/// A blocking HTTP client; with `ca`, https trusts only the certificates in that file.
pub fn http_client(timeout: Duration, ca: Option<&Path>) -> Result<reqwest::blocking::Client> {
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
    if let Some(ca) = ca {
        builder = builder.tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(&std::fs::read(ca)?)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

fn wait_http(url: &str, timeout: Duration, ca: Option<&Path>) -> Result<()> {
    let start = Instant::now();
    let client = http_client(Duration::from_secs(2), ca)?;
    while start.elapsed() < timeout {
        if client.get(url).send().is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{url} did not answer within {timeout:?}")
}
