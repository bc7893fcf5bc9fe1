//! Issue 11: the seeded scenario engine against the real stack. Three
//! tenants (the admin and two projects) drive one real controller, agent,
//! libvirtd and tiny TCG guests through all three interfaces at once (the
//! `kumo` CLI, the native HTTP API and the EC2 API via the AWS SDK for Rust),
//! with faults injected between steps (kill -9 of the agent or the
//! controller, the agent frozen past the heartbeat window). Operations do not
//! wait for each other: one tenant's delete interleaves with another's
//! launch; a resource is only waited for before the engine touches it again.
//!
//! Invariants, after every step: each tenant's native and EC2 listings hold
//! exactly the tenant's own resources, as the model has them; a refused
//! request changed nothing; nothing stays in a transitional state past
//! [`DEADLINE`]; an `error` has a reason and follows an injected fault. At the
//! end, once everything settled: every running guest printed its ready
//! marker, every stopped one is shut off in libvirt, and `kumo admin audit`
//! finds no difference between the database and the host.
//!
//! A failure prints the seed and the steps. Rerun one seed with
//! `KUMO_SCENARIO_SEED=<n>`; `KUMO_SCENARIO_STEPS=<n>` sets the length (the
//! long run: `KUMO_SCENARIO_STEPS=1000`); it prints a `FIGURE` line with the
//! operations, faults, violations and wall time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::InstanceType;
use aws_sdk_ec2::Client;
use kumo_tests::{enabled, Options, Stack};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// How long a resource may stay in a transitional state (TCG on a loaded 2-core host).
const DEADLINE: Duration = Duration::from_secs(300);
/// The most instances alive at once.
const MAX_LIVE: usize = 4;
/// The most volumes alive at once.
const MAX_VOLUMES: usize = 3;
/// Seconds of agent silence before its host is unreachable.
const HOST_TIMEOUT: u64 = 6;
/// Billing hours are this many seconds long here, so the bill can be checked
/// against the instances' histories at the end.
const BILLING_HOUR_SECS: i64 = 2;
/// How long after a fault a refused or failed change is still its
/// consequence (a launch while the host is still unreachable fails with "no
/// host can take it", as it should).
const FAULT_SHADOW: Duration = Duration::from_secs(30);

/// The interface a step goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Cli,
    Native,
    Ec2,
}

const ALL_VIAS: [Via; 3] = [Via::Cli, Via::Native, Via::Ec2];

/// A tenant: a CLI user (`""` is the admin) with its own EC2 access key.
struct Tenant {
    user: String,
    ec2: Client,
}

/// What the engine expects a resource to become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Running,
    Stopped,
    Available,
    InUse,
    Gone,
}

impl Target {
    fn state(self) -> &'static str {
        match self {
            Target::Running => "running",
            Target::Stopped => "stopped",
            Target::Available => "available",
            Target::InUse => "in-use",
            Target::Gone => "deleted",
        }
    }
}

#[derive(Debug, Clone)]
struct Resource {
    tenant: usize,
    target: Target,
    /// When the last change was asked for (for the deadline).
    since: Instant,
    /// Faults injected when the last change was asked for.
    faults_at: u32,
    /// Whether it was asked for soon after a fault (within [`FAULT_SHADOW`]).
    after_fault: bool,
    /// Instances: their volumes; volumes: their instance.
    links: Vec<String>,
    /// Instances: the network they were launched on (None: the default).
    network: Option<String>,
    /// Instances: whether they have a floating IP.
    fip: Option<String>,
    /// Instances: how many times the guest was asked to boot (launch, start,
    /// reboot); its console must show exactly as many ready markers.
    boots: usize,
}

#[derive(Debug, Clone)]
struct Fip {
    tenant: usize,
    instance: Option<String>,
}

#[derive(Debug, Default)]
struct Model {
    instances: BTreeMap<String, Resource>,
    volumes: BTreeMap<String, Resource>,
    fips: BTreeMap<String, Fip>,
    /// Network name -> tenant.
    networks: BTreeMap<String, usize>,
    /// Security-group rule ids per tenant (in its `default` group).
    rules: BTreeMap<String, usize>,
    /// Volume snapshots.
    snapshots: BTreeMap<String, Resource>,
    /// Key pair name -> tenant (names are per project, so the key is (tenant, name)).
    keypairs: BTreeMap<(usize, String), ()>,
    /// Uploaded (private) image id -> tenant.
    images: BTreeMap<String, usize>,
    /// Every instance ever launched -> its tenant (for the bill at the end).
    ever: BTreeMap<String, usize>,
    /// Every billed resource ever made (instances, volumes, snapshots,
    /// images, floating IPs) -> its tenant: no tenant's bill may list another's.
    owners: BTreeMap<String, usize>,
}

impl Model {
    fn live(&self, kind: &BTreeMap<String, Resource>, tenant: usize, want: &[Target]) -> Vec<String> {
        kind.iter().filter(|(_, r)| r.tenant == tenant && want.contains(&r.target)).map(|(id, _)| id.clone()).collect()
    }
}

struct Engine {
    s: Stack,
    rt: tokio::runtime::Runtime,
    tenants: Vec<Tenant>,
    rng: StdRng,
    model: Model,
    steps: Vec<String>,
    faults: u32,
    /// When the last fault was injected.
    last_fault: Option<Instant>,
    refused: u32,
    seed: u64,
    /// Real TCG guests (false: libvirt's test driver, nothing boots).
    guests: bool,
    /// Whether restarting libvirtd is one of the faults
    /// (`KUMO_SCENARIO_LIBVIRTD_RESTART=1`; off by default because the
    /// suite's other tests share the one libvirtd).
    libvirtd_restarts: bool,
}

fn ids_of(listing: &Value) -> Vec<String> {
    listing["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

impl Engine {
    fn new(seed: u64, guests: bool) -> Result<Self> {
        let s = Stack::start(Options {
            host_timeout_secs: Some(HOST_TIMEOUT),
            test_driver_host: !guests,
            controller_extra: format!(
                "billing_hour_secs = {BILLING_HOUR_SECS}\nbilling_close_grace_secs = 0\nbilling_close_interval_secs = 1\n"
            ),
            ..Options::default()
        })?;
        s.register_tiny_image()?;
        s.kumo_ok(&["network", "create", "scn-public", "--cidr", "203.0.113.64/27", "--external"])?;
        s.login_as("alice", "scn-a")?;
        s.login_as("bob", "scn-b")?;
        let rt = tokio::runtime::Runtime::new()?;
        let mut tenants = Vec::new();
        for user in ["", "alice", "bob"] {
            let key = if user.is_empty() {
                s.kumo_json(&["access-key", "create"])?
            } else {
                s.kumo_json_as(user, &["access-key", "create"])?
            };
            let (id, secret) = (
                key["access_key_id"].as_str().context("access key id")?,
                key["secret_access_key"].as_str().context("secret")?,
            );
            tenants.push(Tenant {
                user: user.to_owned(),
                ec2: crate::ec2_sdk::client(&format!("{}/", s.endpoint), id, secret),
            });
        }
        Ok(Self {
            s,
            rt,
            tenants,
            rng: StdRng::seed_from_u64(seed),
            model: Model::default(),
            steps: Vec::new(),
            faults: 0,
            last_fault: None,
            refused: 0,
            seed,
            guests,
            libvirtd_restarts: guests && std::env::var("KUMO_SCENARIO_LIBVIRTD_RESTART").is_ok_and(|v| v == "1"),
        })
    }

    fn user(&self, t: usize) -> &str {
        &self.tenants[t].user
    }

    fn cli(&self, t: usize, args: &[&str]) -> Result<Value> {
        if t == 0 {
            self.s.kumo_json(args)
        } else {
            self.s.kumo_json_as(self.user(t), args)
        }
    }

    /// Runs the CLI as tenant `t` for its exit code (commands that print no JSON).
    fn cli_ok(&self, t: usize, args: &[&str]) -> Result<()> {
        let out = self.cli_raw(t, args)?;
        if !out.status.success() {
            bail!(
                "kumo {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The CLI's output as tenant `t`, whatever its exit code.
    fn cli_raw(&self, t: usize, args: &[&str]) -> Result<std::process::Output> {
        if t == 0 {
            self.s.kumo(args)
        } else {
            self.s.kumo_as(self.user(t), args)
        }
    }

    fn api(&self, t: usize, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.s.api_as(self.user(t), method, path, body)
    }

    /// The status and body of a native call, whatever the status.
    fn raw(&self, t: usize, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let file = if t == 0 { "cli.toml".to_owned() } else { format!("cli-{}.toml", self.user(t)) };
        let config: toml::Table = std::fs::read_to_string(self.s.dir.path().join(file))?.parse()?;
        let token = config.get("token").and_then(|v| v.as_str()).context("token")?;
        let client = self.s.http_client(Duration::from_secs(30))?;
        let mut req = client.request(method.parse()?, format!("{}{path}", self.s.endpoint)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let text = resp.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> Option<T> {
        from.choose(&mut self.rng).cloned()
    }

    fn via(&mut self) -> Via {
        ALL_VIAS[self.rng.gen_range(0..3)]
    }

    fn in_fault_shadow(&self) -> bool {
        self.last_fault.is_some_and(|at| at.elapsed() < FAULT_SHADOW)
    }

    fn mark(&mut self, kind: Kind, id: &str, target: Target) {
        let faults = self.faults;
        let after_fault = self.in_fault_shadow();
        let r = match kind {
            Kind::Instance => self.model.instances.get_mut(id),
            Kind::Volume => self.model.volumes.get_mut(id),
            Kind::Snapshot => self.model.snapshots.get_mut(id),
        };
        if let Some(r) = r {
            r.target = target;
            r.since = Instant::now();
            r.faults_at = faults;
            r.after_fault = after_fault;
        }
    }

    fn new_resource(&self, tenant: usize, target: Target) -> Resource {
        Resource {
            tenant,
            target,
            since: Instant::now(),
            faults_at: self.faults,
            after_fault: self.in_fault_shadow(),
            links: Vec::new(),
            network: None,
            fip: None,
            boots: 0,
        }
    }

    /// The resource's current state as its owner reads it (`deleted` when gone).
    fn state(&self, kind: Kind, id: &str, tenant: usize) -> Result<(String, Value)> {
        let path = kind.path(id);
        let (status, body) = self.raw(tenant, "GET", &path, None)?;
        match status {
            200 => Ok((body["state"].as_str().unwrap_or_default().to_owned(), body)),
            404 => Ok(("deleted".to_owned(), Value::Null)),
            other => bail!("GET {path} answered {other}: {body}"),
        }
    }

    /// Waits until the resource reached its target; an `error` after a fault
    /// drops it from the model (deleting it), any other `error` or a missed
    /// deadline is a violation.
    fn settle(&mut self, kind: Kind, id: &str) -> Result<()> {
        loop {
            let Some(r) = self.resource(kind, id).cloned() else { return Ok(()) };
            let (state, body) = self.state(kind, id, r.tenant)?;
            if state == r.target.state() {
                if r.target == Target::Gone {
                    self.remove(kind, id);
                }
                return Ok(());
            }
            if state == "error" {
                let reason = body["state_reason"].as_str().unwrap_or_default().to_owned();
                if reason.trim().is_empty() {
                    bail!("{id} is in error without a reason: {body}");
                }
                if self.faults == r.faults_at && !r.after_fault {
                    bail!("{id} went to error with no fault to explain it: {reason}");
                }
                eprintln!("scenario: {id} in error after a fault ({reason}); deleting it");
                self.forget_after_error(kind, id, &r)?;
                return Ok(());
            }
            if r.since.elapsed() > DEADLINE {
                bail!("{id} still {state} (wants {}) after {DEADLINE:?}: {body}", r.target.state());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Whether the resource is in the model and not on its way out.
    fn alive(&self, kind: Kind, id: &str) -> bool {
        self.resource(kind, id).is_some_and(|r| r.target != Target::Gone)
    }

    fn resource(&self, kind: Kind, id: &str) -> Option<&Resource> {
        match kind {
            Kind::Instance => self.model.instances.get(id),
            Kind::Volume => self.model.volumes.get(id),
            Kind::Snapshot => self.model.snapshots.get(id),
        }
    }

    fn remove(&mut self, kind: Kind, id: &str) {
        match kind {
            Kind::Instance => {
                self.model.instances.remove(id);
                for fip in self.model.fips.values_mut() {
                    if fip.instance.as_deref() == Some(id) {
                        fip.instance = None;
                    }
                }
            }
            Kind::Volume => {
                self.model.volumes.remove(id);
            }
            Kind::Snapshot => {
                self.model.snapshots.remove(id);
            }
        }
    }

    fn forget_after_error(&mut self, kind: Kind, id: &str, r: &Resource) -> Result<()> {
        let path = kind.path(id);
        let _ = self.raw(r.tenant, "DELETE", &path, None)?;
        self.mark(kind, id, Target::Gone);
        if let Some(res) = self.resource(kind, id) {
            for linked in res.links.clone() {
                let other = if kind == Kind::Instance { Kind::Volume } else { Kind::Instance };
                if other == Kind::Volume {
                    self.mark(Kind::Volume, &linked, Target::Available);
                }
            }
        }
        Ok(())
    }

    /// How many ready markers the instance's console shows (read as its owner).
    fn markers(&self, id: &str, tenant: usize) -> Result<usize> {
        let out = self.cli_raw(tenant, &["instance", "console", id])?;
        Ok(String::from_utf8_lossy(&out.stdout).matches(&format!("KUMO-READY instance-id={id} ")).count())
    }

    /// Settles the instance and, when it runs, waits until the guest finished
    /// its latest boot: a disk hot-plugged or unplugged while the guest is
    /// still booting can be missed by it (its ACPI hotplug handling is not up
    /// yet), as on any cloud.
    fn wait_booted(&mut self, id: &str) -> Result<()> {
        self.settle(Kind::Instance, id)?;
        if !self.guests {
            return Ok(());
        }
        let Some(r) = self.model.instances.get(id).cloned() else { return Ok(()) };
        if r.target != Target::Running {
            return Ok(());
        }
        let start = Instant::now();
        while self.markers(id, r.tenant)? < r.boots {
            if start.elapsed() > DEADLINE {
                bail!("{id} did not finish boot {} within {DEADLINE:?}", r.boots);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(())
    }

    fn settle_all(&mut self) -> Result<()> {
        let instances: Vec<String> = self.model.instances.keys().cloned().collect();
        for id in instances {
            self.settle(Kind::Instance, &id)?;
        }
        let volumes: Vec<String> = self.model.volumes.keys().cloned().collect();
        for id in volumes {
            self.settle(Kind::Volume, &id)?;
        }
        let snapshots: Vec<String> = self.model.snapshots.keys().cloned().collect();
        for id in snapshots {
            self.settle(Kind::Snapshot, &id)?;
        }
        Ok(())
    }

    fn log(&mut self, line: String) {
        eprintln!("scenario step {}: {line}", self.steps.len());
        self.steps.push(line);
    }

    /// One random step.
    fn step(&mut self) -> Result<()> {
        let t = self.rng.gen_range(0..3);
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=15 => self.run(t),
            16..=24 => self.power(t),
            25..=31 => self.delete_instance(t),
            32..=37 => self.volume_create(t),
            // libvirt's test driver cannot hot-plug disks.
            38..=45 if self.guests => self.volume_attach_or_detach(t),
            38..=45 => self.volume_create(t),
            46..=49 => self.volume_delete(t),
            50..=54 => self.rule(t),
            55..=60 => self.fip(t),
            61..=64 => self.network(t),
            65..=68 => self.snapshot(t),
            69..=71 => self.image(t),
            72..=74 => self.keypair(t),
            75..=90 => self.bad(t),
            _ => self.fault(),
        }
    }

    fn run(&mut self, t: usize) -> Result<()> {
        let live = self.model.instances.values().filter(|r| r.target != Target::Gone).count();
        if live >= MAX_LIVE {
            return self.bad(t);
        }
        let via = self.via();
        let name = format!("scn-{}", self.steps.len());
        let nets: Vec<String> = self.model.networks.iter().filter(|(_, o)| **o == t).map(|(n, _)| n.clone()).collect();
        let network = if self.rng.gen_bool(0.4) { self.pick(&nets) } else { None };
        let config_drive = self.rng.gen_bool(0.3);
        // Two at once (EC2's MinCount = MaxCount = 2) while there is room.
        let count = if via == Via::Ec2 && live + 2 <= MAX_LIVE && self.rng.gen_bool(0.3) { 2 } else { 1 };
        let keys: Vec<String> =
            self.model.keypairs.keys().filter(|(owner, _)| *owner == t).map(|(_, name)| name.clone()).collect();
        let key = if self.rng.gen_bool(0.5) { self.pick(&keys) } else { None };
        let ids: Vec<String> = match via {
            Via::Cli => {
                let mut args =
                    vec!["instance", "run", "--flavor", "mini", "--image", "tiny", "--user-data", "#!/bin/sh\n"];
                if let Some(n) = &network {
                    args.extend(["--network", n.as_str()]);
                }
                if let Some(k) = &key {
                    args.extend(["--key-pair", k.as_str()]);
                }
                if config_drive {
                    args.push("--config-drive");
                }
                args.push(&name);
                ids_of(&json!({"items": self.cli(t, &args)?["instances"]}))
            }
            Via::Native => {
                let body = json!({"name": name, "flavor": "mini", "image": "tiny", "config_drive": config_drive,
                                  "networks": network.iter().collect::<Vec<_>>()});
                ids_of(&json!({"items": self.api(t, "POST", "/v1/instances", Some(body))?["instances"]}))
            }
            Via::Ec2 => {
                let ec2 = self.tenants[t].ec2.clone();
                let image = self.ec2_image(t)?;
                let out = self.rt.block_on(
                    ec2.run_instances()
                        .image_id(image)
                        .instance_type(InstanceType::from("mini"))
                        .min_count(count)
                        .max_count(count)
                        .set_key_name(key.clone())
                        .send(),
                )?;
                out.instances().iter().filter_map(|i| i.instance_id().map(str::to_owned)).collect()
            }
        };
        if ids.len() != count as usize {
            bail!("a launch of {count} answered {ids:?}");
        }
        for id in &ids {
            self.s.track(id);
            self.model.ever.insert(id.clone(), t);
            self.model.owners.insert(id.clone(), t);
            let mut r = self.new_resource(t, Target::Running);
            r.boots = 1;
            r.network = if via == Via::Ec2 { None } else { network.clone() };
            self.model.instances.insert(id.clone(), r);
        }
        self.log(format!("t{t} {via:?} run {ids:?} network={network:?} config_drive={config_drive} key={key:?}"));
        Ok(())
    }

    fn ec2_image(&self, t: usize) -> Result<String> {
        let ec2 = self.tenants[t].ec2.clone();
        let images = self.rt.block_on(
            ec2.describe_images()
                .filters(aws_sdk_ec2::types::Filter::builder().name("name").values("tiny").build())
                .send(),
        )?;
        images.images().first().and_then(|i| i.image_id()).map(str::to_owned).context("no tiny image in EC2")
    }

    fn power(&mut self, t: usize) -> Result<()> {
        let candidates = self.model.live(&self.model.instances, t, &[Target::Running, Target::Stopped]);
        let Some(id) = self.pick(&candidates) else { return self.bad(t) };
        // A power action during a boot would make the boot count ambiguous.
        self.wait_booted(&id)?;
        // Settling may have found it in `error` after a fault and deleted it.
        let Some(current) = self.model.instances.get(&id).map(|r| r.target).filter(|t| *t != Target::Gone) else {
            return Ok(());
        };
        let via = self.via();
        let (action, target) = match current {
            Target::Running if self.rng.gen_bool(0.3) => ("reboot", Target::Running),
            Target::Running => ("stop", Target::Stopped),
            _ => ("start", Target::Running),
        };
        match via {
            Via::Cli => {
                self.cli(t, &["instance", action, &id])?;
            }
            Via::Native => {
                self.api(t, "POST", &format!("/v1/instances/{id}/actions"), Some(json!({"action": action})))?;
            }
            Via::Ec2 => {
                let ec2 = self.tenants[t].ec2.clone();
                match action {
                    "reboot" => drop(self.rt.block_on(ec2.reboot_instances().instance_ids(&id).send())?),
                    "stop" => drop(self.rt.block_on(ec2.stop_instances().instance_ids(&id).send())?),
                    _ => drop(self.rt.block_on(ec2.start_instances().instance_ids(&id).send())?),
                }
            }
        }
        self.mark(Kind::Instance, &id, target);
        if target == Target::Running {
            if let Some(r) = self.model.instances.get_mut(&id) {
                r.boots += 1;
            }
        }
        self.log(format!("t{t} {via:?} {action} {id}"));
        Ok(())
    }

    fn delete_instance(&mut self, t: usize) -> Result<()> {
        let candidates = self.model.live(&self.model.instances, t, &[Target::Running, Target::Stopped]);
        let Some(id) = self.pick(&candidates) else { return self.bad(t) };
        self.settle(Kind::Instance, &id)?;
        let Some(r) = self.model.instances.get(&id).filter(|r| r.target != Target::Gone).cloned() else {
            return Ok(());
        };
        // Volumes are detached first (AWS's DeleteOnTermination=false volumes outlive it).
        if !r.links.is_empty() {
            self.wait_booted(&id)?;
        }
        for vol in r.links.clone() {
            self.settle(Kind::Volume, &vol)?;
            self.cli(t, &["volume", "detach", &vol])?;
            self.mark(Kind::Volume, &vol, Target::Available);
            self.unlink(&id, &vol);
            self.log(format!("t{t} Cli detach {vol} (before deleting {id})"));
            self.settle(Kind::Volume, &vol)?;
        }
        if let Some(fip) = r.fip.clone() {
            // Released along with the instance? No: a floating IP outlives it, disassociated.
            if let Some(f) = self.model.fips.get_mut(&fip) {
                f.instance = None;
            }
        }
        let via = self.via();
        match via {
            Via::Cli => drop(self.cli(t, &["instance", "delete", &id])?),
            Via::Native => drop(self.api(t, "DELETE", &format!("/v1/instances/{id}"), None)?),
            Via::Ec2 => {
                let ec2 = self.tenants[t].ec2.clone();
                self.rt.block_on(ec2.terminate_instances().instance_ids(&id).send())?;
            }
        }
        self.mark(Kind::Instance, &id, Target::Gone);
        self.log(format!("t{t} {via:?} delete {id}"));
        Ok(())
    }

    fn unlink(&mut self, instance: &str, volume: &str) {
        if let Some(i) = self.model.instances.get_mut(instance) {
            i.links.retain(|v| v != volume);
        }
        if let Some(v) = self.model.volumes.get_mut(volume) {
            v.links.clear();
        }
    }

    fn volume_create(&mut self, t: usize) -> Result<()> {
        let live = self.model.volumes.values().filter(|r| r.target != Target::Gone).count();
        if live >= MAX_VOLUMES {
            return if self.guests { self.volume_attach_or_detach(t) } else { self.volume_delete(t) };
        }
        let via = self.via();
        let name = format!("scn-vol-{}", self.steps.len());
        let created = (|| -> Result<Option<String>> {
            Ok(match via {
                Via::Cli => self.cli(t, &["volume", "create", &name, "--size", "1"])?["id"].as_str().map(str::to_owned),
                Via::Native => self.api(t, "POST", "/v1/volumes", Some(json!({"name": name, "size_gib": 1})))?["id"]
                    .as_str()
                    .map(str::to_owned),
                Via::Ec2 => {
                    let ec2 = self.tenants[t].ec2.clone();
                    let zone = self.rt.block_on(ec2.describe_availability_zones().send())?;
                    let zone =
                        zone.availability_zones().first().and_then(|z| z.zone_name()).context("a zone")?.to_owned();
                    let out = self.rt.block_on(ec2.create_volume().availability_zone(zone).size(1).send())?;
                    out.volume_id().map(str::to_owned)
                }
            })
        })();
        // A local volume needs a reachable host at once: right after a fault
        // the host may still be unreachable, and the create is refused (the
        // views then prove it made nothing).
        let created = match created {
            Err(err) if self.in_fault_shadow() => {
                self.refused += 1;
                self.log(format!("t{t} {via:?} volume create refused after a fault: {err:#}"));
                return Ok(());
            }
            other => other?,
        };
        let id = created.context("the volume create answered no id")?;
        self.model.volumes.insert(id.clone(), self.new_resource(t, Target::Available));
        self.model.owners.insert(id.clone(), t);
        self.log(format!("t{t} {via:?} volume create {id}"));
        Ok(())
    }

    fn volume_attach_or_detach(&mut self, t: usize) -> Result<()> {
        let attached = self.model.live(&self.model.volumes, t, &[Target::InUse]);
        let available = self.model.live(&self.model.volumes, t, &[Target::Available]);
        let instances = self.model.live(&self.model.instances, t, &[Target::Running, Target::Stopped]);
        let via = self.via();
        if !attached.is_empty() && (available.is_empty() || instances.is_empty() || self.rng.gen_bool(0.5)) {
            let Some(vol) = self.pick(&attached) else { return Ok(()) };
            self.settle(Kind::Volume, &vol)?;
            let Some(instance) = self.model.volumes.get(&vol).and_then(|v| v.links.first().cloned()) else {
                return Ok(());
            };
            self.wait_booted(&instance)?;
            match via {
                Via::Cli => drop(self.cli(t, &["volume", "detach", &vol])?),
                Via::Native => drop(self.api(
                    t,
                    "POST",
                    &format!("/v1/volumes/{vol}/actions"),
                    Some(json!({"action": "detach"})),
                )?),
                Via::Ec2 => {
                    let ec2 = self.tenants[t].ec2.clone();
                    self.rt.block_on(ec2.detach_volume().volume_id(&vol).send())?;
                }
            }
            self.unlink(&instance, &vol);
            self.mark(Kind::Volume, &vol, Target::Available);
            self.log(format!("t{t} {via:?} detach {vol} from {instance}"));
            return Ok(());
        }
        let (Some(vol), Some(instance)) = (self.pick(&available), self.pick(&instances)) else {
            return self.bad(t);
        };
        self.settle(Kind::Volume, &vol)?;
        self.wait_booted(&instance)?;
        if !self.alive(Kind::Instance, &instance) || !self.alive(Kind::Volume, &vol) {
            return Ok(());
        }
        match via {
            Via::Cli => drop(self.cli(t, &["volume", "attach", &vol, "--instance", &instance])?),
            Via::Native => drop(self.api(
                t,
                "POST",
                &format!("/v1/volumes/{vol}/actions"),
                Some(json!({"action": "attach", "instance": instance})),
            )?),
            Via::Ec2 => {
                let ec2 = self.tenants[t].ec2.clone();
                let n = self.model.instances[&instance].links.len();
                let device = format!("/dev/sd{}", (b'f' + n as u8) as char);
                self.rt.block_on(ec2.attach_volume().volume_id(&vol).instance_id(&instance).device(device).send())?;
            }
        }
        if let Some(i) = self.model.instances.get_mut(&instance) {
            i.links.push(vol.clone());
        }
        if let Some(v) = self.model.volumes.get_mut(&vol) {
            v.links = vec![instance.clone()];
        }
        self.mark(Kind::Volume, &vol, Target::InUse);
        self.log(format!("t{t} {via:?} attach {vol} to {instance}"));
        Ok(())
    }

    fn volume_delete(&mut self, t: usize) -> Result<()> {
        let available = self.model.live(&self.model.volumes, t, &[Target::Available]);
        let Some(vol) = self.pick(&available) else { return self.bad(t) };
        self.settle(Kind::Volume, &vol)?;
        if !self.alive(Kind::Volume, &vol) {
            return Ok(());
        }
        let via = self.via();
        match via {
            Via::Cli => drop(self.cli(t, &["volume", "delete", &vol])?),
            Via::Native => drop(self.api(t, "DELETE", &format!("/v1/volumes/{vol}"), None)?),
            Via::Ec2 => {
                let ec2 = self.tenants[t].ec2.clone();
                self.rt.block_on(ec2.delete_volume().volume_id(&vol).send())?;
            }
        }
        self.mark(Kind::Volume, &vol, Target::Gone);
        self.log(format!("t{t} {via:?} volume delete {vol}"));
        Ok(())
    }

    /// Adds a rule to the tenant's `default` group, or removes one it added.
    fn rule(&mut self, t: usize) -> Result<()> {
        let mine: Vec<String> = self.model.rules.iter().filter(|(_, o)| **o == t).map(|(r, _)| r.clone()).collect();
        if let Some(rule) = (!mine.is_empty() && self.rng.gen_bool(0.5)).then(|| self.pick(&mine)).flatten() {
            self.api(t, "DELETE", &format!("/v1/security-groups/default/rules/{rule}"), None)?;
            self.model.rules.remove(&rule);
            self.log(format!("t{t} Native rule remove {rule}"));
            return Ok(());
        }
        let port = 1000 + self.rng.gen_range(0..5000u32);
        let before: Vec<String> = self.api(t, "GET", "/v1/security-groups/default", None)?["rules"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        // From an address block, or from the group's own members (a source-group rule).
        let source = if self.rng.gen_bool(0.3) { ["--source-group", "default"] } else { ["--cidr", "10.0.0.0/8"] };
        let port = port.to_string();
        let mut args = vec!["sg", "rule", "add", "default", "--protocol", "tcp", "--port", &port];
        args.extend(source);
        let group = self.cli(t, &args)?;
        let added: Vec<String> = group["rules"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let new: Vec<&String> = added.iter().filter(|r| !before.contains(r)).collect();
        let [rule] = new.as_slice() else { bail!("adding one rule added {new:?}: {group}") };
        self.model.rules.insert((*rule).clone(), t);
        self.log(format!("t{t} Cli rule add tcp/{port} {} {rule}", source.join(" ")));
        Ok(())
    }

    fn fip(&mut self, t: usize) -> Result<()> {
        let mine: Vec<String> = self.model.fips.iter().filter(|(_, f)| f.tenant == t).map(|(i, _)| i.clone()).collect();
        let running = self.model.live(&self.model.instances, t, &[Target::Running]);
        let free: Vec<String> = running.iter().filter(|i| self.model.instances[*i].fip.is_none()).cloned().collect();
        let Some(fip) = self.pick(&mine) else {
            if mine.len() + self.model.fips.len() >= 6 {
                return self.bad(t);
            }
            let out = self.cli(t, &["fip", "allocate", "--network", "scn-public"])?;
            let id = out["id"].as_str().context("fip id")?.to_owned();
            self.model.fips.insert(id.clone(), Fip { tenant: t, instance: None });
            self.model.owners.insert(id.clone(), t);
            self.log(format!("t{t} Cli fip allocate {id}"));
            return Ok(());
        };
        match self.model.fips[&fip].instance.clone() {
            Some(instance) => {
                self.cli(t, &["fip", "disassociate", &fip])?;
                if let Some(f) = self.model.fips.get_mut(&fip) {
                    f.instance = None;
                }
                if let Some(i) = self.model.instances.get_mut(&instance) {
                    i.fip = None;
                }
                self.log(format!("t{t} Cli fip disassociate {fip} from {instance}"));
            }
            None => match self.pick(&free) {
                Some(instance) if self.rng.gen_bool(0.7) => {
                    // A launch right after a fault may have failed (`error`, its ports freed).
                    self.settle(Kind::Instance, &instance)?;
                    if !self.alive(Kind::Instance, &instance) {
                        return Ok(());
                    }
                    self.api(
                        t,
                        "POST",
                        &format!("/v1/floating-ips/{fip}/associate"),
                        Some(json!({"instance": instance})),
                    )?;
                    if let Some(f) = self.model.fips.get_mut(&fip) {
                        f.instance = Some(instance.clone());
                    }
                    if let Some(i) = self.model.instances.get_mut(&instance) {
                        i.fip = Some(fip.clone());
                    }
                    self.log(format!("t{t} Native fip associate {fip} to {instance}"));
                }
                _ => {
                    self.cli(t, &["fip", "release", &fip])?;
                    self.model.fips.remove(&fip);
                    self.log(format!("t{t} Cli fip release {fip}"));
                }
            },
        }
        Ok(())
    }

    fn network(&mut self, t: usize) -> Result<()> {
        let mine: Vec<String> = self.model.networks.iter().filter(|(_, o)| **o == t).map(|(n, _)| n.clone()).collect();
        let unused: Vec<String> = mine
            .iter()
            .filter(|n| !self.model.instances.values().any(|i| i.network.as_deref() == Some(n.as_str())))
            .cloned()
            .collect();
        if mine.len() < 2 && (unused.is_empty() || self.rng.gen_bool(0.6)) {
            let name = format!("scn-net-{}", self.steps.len());
            let cidr = format!("10.{}.{}.0/24", 150 + t * 10 + mine.len(), self.steps.len() % 250);
            self.cli(t, &["network", "create", &name, "--cidr", &cidr])?;
            self.model.networks.insert(name.clone(), t);
            self.log(format!("t{t} Cli network create {name} {cidr}"));
            return Ok(());
        }
        let Some(name) = self.pick(&unused) else { return self.bad(t) };
        self.cli(t, &["network", "delete", &name])?;
        self.model.networks.remove(&name);
        self.log(format!("t{t} Cli network delete {name}"));
        Ok(())
    }

    /// Takes a snapshot of one of the tenant's volumes, or deletes one of its snapshots.
    fn snapshot(&mut self, t: usize) -> Result<()> {
        let mine = self.model.live(&self.model.snapshots, t, &[Target::Available]);
        // On the test driver nothing attaches, so only available volumes exist there anyway.
        let volumes = self.model.live(&self.model.volumes, t, &[Target::Available, Target::InUse]);
        let via = self.via();
        if mine.len() < 2 && !volumes.is_empty() && (mine.is_empty() || self.rng.gen_bool(0.5)) {
            let Some(vol) = self.pick(&volumes) else { return Ok(()) };
            self.settle(Kind::Volume, &vol)?;
            if !self.alive(Kind::Volume, &vol) {
                return Ok(());
            }
            let name = format!("scn-snap-{}", self.steps.len());
            let id = match via {
                Via::Ec2 => {
                    let ec2 = self.tenants[t].ec2.clone();
                    let out = self.rt.block_on(ec2.create_snapshot().volume_id(&vol).send())?;
                    out.snapshot_id().map(str::to_owned)
                }
                _ => self.cli(t, &["snapshot", "create", &name, "--volume", &vol])?["id"].as_str().map(str::to_owned),
            };
            let id = id.context("the snapshot create answered no id")?;
            self.model.snapshots.insert(id.clone(), self.new_resource(t, Target::Available));
            self.model.owners.insert(id.clone(), t);
            self.log(format!("t{t} {via:?} snapshot {vol} as {id}"));
            return Ok(());
        }
        let Some(snap) = self.pick(&mine) else { return self.bad(t) };
        self.settle(Kind::Snapshot, &snap)?;
        if !self.alive(Kind::Snapshot, &snap) {
            return Ok(());
        }
        match via {
            Via::Ec2 => {
                let ec2 = self.tenants[t].ec2.clone();
                self.rt.block_on(ec2.delete_snapshot().snapshot_id(&snap).send())?;
            }
            Via::Native => drop(self.api(t, "DELETE", &Kind::Snapshot.path(&snap), None)?),
            Via::Cli => self.cli_ok(t, &["snapshot", "delete", &snap])?,
        }
        self.mark(Kind::Snapshot, &snap, Target::Gone);
        self.log(format!("t{t} {via:?} snapshot delete {snap}"));
        Ok(())
    }

    /// Uploads a small disk image (private to the tenant's project), or deletes one.
    fn image(&mut self, t: usize) -> Result<()> {
        let mine: Vec<String> = self.model.images.iter().filter(|(_, o)| **o == t).map(|(i, _)| i.clone()).collect();
        if mine.len() < 2 && (mine.is_empty() || self.rng.gen_bool(0.5)) {
            let file = self.s.dir.path().join("scn-disk.qcow2");
            if !file.exists() {
                let out = std::process::Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(&file)
                    .arg("16M")
                    .output()?;
                if !out.status.success() {
                    bail!("qemu-img create: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
            let name = format!("scn-img-{}", self.steps.len());
            let file = file.to_string_lossy().into_owned();
            let out = self.cli(t, &["image", "upload", "--name", &name, &file])?;
            let id = out["id"].as_str().with_context(|| format!("image upload answered {out}"))?.to_owned();
            self.model.images.insert(id.clone(), t);
            self.model.owners.insert(id.clone(), t);
            self.log(format!("t{t} Cli image upload {name} as {id}"));
            return Ok(());
        }
        let Some(image) = self.pick(&mine) else { return self.bad(t) };
        let via = self.via();
        match via {
            Via::Ec2 => {
                let ec2 = self.tenants[t].ec2.clone();
                self.rt.block_on(ec2.deregister_image().image_id(&image).send())?;
            }
            _ => self.cli_ok(t, &["image", "delete", &image])?,
        }
        self.model.images.remove(&image);
        self.log(format!("t{t} {via:?} image delete {image}"));
        Ok(())
    }

    /// Creates a key pair with a name AWS allows (mixed case, '_' and '.'), or deletes one.
    fn keypair(&mut self, t: usize) -> Result<()> {
        let mine: Vec<String> =
            self.model.keypairs.keys().filter(|(owner, _)| *owner == t).map(|(_, n)| n.clone()).collect();
        let via = if self.rng.gen_bool(0.5) { Via::Ec2 } else { Via::Cli };
        if mine.len() < 2 && (mine.is_empty() || self.rng.gen_bool(0.5)) {
            let name = format!("Scn_Key.{}", self.steps.len());
            match via {
                Via::Ec2 => {
                    let ec2 = self.tenants[t].ec2.clone();
                    let out = self.rt.block_on(ec2.create_key_pair().key_name(&name).send())?;
                    if !out.key_material().is_some_and(|k| k.contains("PRIVATE KEY")) {
                        bail!("CreateKeyPair {name} answered no private key");
                    }
                }
                _ => drop(self.cli(t, &["keypair", "create", &name])?),
            }
            self.model.keypairs.insert((t, name.clone()), ());
            self.log(format!("t{t} {via:?} keypair create {name}"));
            return Ok(());
        }
        let Some(name) = self.pick(&mine) else { return self.bad(t) };
        match via {
            Via::Ec2 => {
                let ec2 = self.tenants[t].ec2.clone();
                self.rt.block_on(ec2.delete_key_pair().key_name(&name).send())?;
            }
            _ => self.cli_ok(t, &["keypair", "delete", &name])?,
        }
        self.model.keypairs.remove(&(t, name.clone()));
        self.log(format!("t{t} {via:?} keypair delete {name}"));
        Ok(())
    }

    /// A request that must be refused and change nothing: another tenant's
    /// resource through each interface, or bad input.
    fn bad(&mut self, t: usize) -> Result<()> {
        let others: Vec<String> = self
            .model
            .instances
            .iter()
            .filter(|(_, r)| r.tenant != t && r.target != Target::Gone)
            .map(|(i, _)| i.clone())
            .collect();
        let other_volumes: Vec<String> = self
            .model
            .volumes
            .iter()
            .filter(|(_, r)| r.tenant != t && r.target != Target::Gone)
            .map(|(i, _)| i.clone())
            .collect();
        let kind = self.rng.gen_range(0..5);
        let what = match (kind, self.pick(&others), self.pick(&other_volumes)) {
            (0, Some(id), _) => {
                let (status, body) =
                    self.raw(t, "POST", &format!("/v1/instances/{id}/actions"), Some(json!({"action": "stop"})))?;
                if status != 404 {
                    bail!("t{t} stopping another tenant's {id} answered {status}: {body}");
                }
                format!("native stop of another tenant's {id}: 404")
            }
            (1, Some(id), _) => {
                let ec2 = self.tenants[t].ec2.clone();
                let err = self.rt.block_on(ec2.terminate_instances().instance_ids(&id).send()).err();
                let code = err.as_ref().and_then(|e| e.code()).unwrap_or("none").to_owned();
                if code != "InvalidInstanceID.NotFound" {
                    bail!("t{t} EC2 terminate of another tenant's {id}: {code} ({err:?})");
                }
                format!("EC2 terminate of another tenant's {id}: {code}")
            }
            (2, _, Some(vol)) => {
                let (status, body) = self.raw(t, "DELETE", &format!("/v1/volumes/{vol}"), None)?;
                if status != 404 {
                    bail!("t{t} deleting another tenant's {vol} answered {status}: {body}");
                }
                format!("native delete of another tenant's {vol}: 404")
            }
            (3, _, _) => {
                let out = self.cli_raw(t, &["instance", "run", "--flavor", "no-such-flavor", "scn-bad"])?;
                if out.status.success() {
                    bail!("a launch with an unknown flavor succeeded");
                }
                format!("CLI run with an unknown flavor: exit {:?}", out.status.code())
            }
            _ => {
                let (status, body) =
                    self.raw(t, "POST", "/v1/volumes", Some(json!({"name": "Not A Name!", "size_gib": 0})))?;
                if !(400..500).contains(&status) {
                    bail!("a volume of 0 GiB named 'Not A Name!' answered {status}: {body}");
                }
                format!("native volume create with bad input: {status}")
            }
        };
        self.refused += 1;
        self.log(format!("t{t} refused: {what}"));
        Ok(())
    }

    fn fault(&mut self) -> Result<()> {
        self.faults += 1;
        let kinds = if self.libvirtd_restarts { 4 } else { 3 };
        match self.rng.gen_range(0..kinds) {
            0 => {
                let agent = self.s.agent.as_mut().context("no agent")?;
                agent.signal("KILL")?;
                let _ = agent.child.wait();
                self.s.start_agent()?;
                self.log("FAULT kill -9 the agent, start it again".into());
            }
            1 => {
                self.s.api.signal("KILL")?;
                let _ = self.s.api.child.wait();
                self.s.restart_api(|_| {})?;
                self.log("FAULT kill -9 the controller, start it again".into());
            }
            3 => {
                restart_libvirtd()?;
                self.log("FAULT libvirtd stopped and started again".into());
            }
            _ => {
                let agent = self.s.agent.as_ref().context("no agent")?;
                agent.signal("STOP")?;
                std::thread::sleep(Duration::from_secs(HOST_TIMEOUT + 4));
                self.s.agent.as_ref().context("no agent")?.signal("CONT")?;
                self.log(format!("FAULT agent frozen for {} s", HOST_TIMEOUT + 4));
            }
        }
        self.last_fault = Some(Instant::now());
        Ok(())
    }

    /// Each tenant's listings (native and EC2) hold exactly its own resources.
    fn check_views(&mut self) -> Result<()> {
        for t in 0..self.tenants.len() {
            let native = ids_of(&self.api(t, "GET", "/v1/instances?limit=1000", None)?);
            let expected: Vec<&String> =
                self.model.instances.iter().filter(|(_, r)| r.tenant == t).map(|(i, _)| i).collect();
            for id in &native {
                if !expected.contains(&id) {
                    bail!("t{t} lists instance {id}, which is not its own or should be gone");
                }
            }
            for (id, r) in self.model.instances.iter().filter(|(_, r)| r.tenant == t && r.target != Target::Gone) {
                if !native.contains(id) {
                    bail!("t{t} does not list its instance {id} ({r:?})");
                }
            }
            let volumes = ids_of(&self.api(t, "GET", "/v1/volumes?limit=1000", None)?);
            for id in &volumes {
                if self.model.volumes.get(id).map(|r| r.tenant) != Some(t) {
                    bail!("t{t} lists volume {id}, which is not its own or should be gone");
                }
            }
            for (id, _) in self.model.volumes.iter().filter(|(_, r)| r.tenant == t && r.target != Target::Gone) {
                if !volumes.contains(id) {
                    bail!("t{t} does not list its volume {id}");
                }
            }
            self.check_other_views(t)?;
            let ec2 = self.tenants[t].ec2.clone();
            let described = self.rt.block_on(ec2.describe_instances().send())?;
            for inst in described.reservations().iter().flat_map(|r| r.instances()) {
                let id = inst.instance_id().unwrap_or_default();
                let state = inst.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()).unwrap_or_default();
                if state == "terminated" {
                    continue;
                }
                if self.model.instances.get(id).map(|r| r.tenant) != Some(t) {
                    bail!("t{t} sees {id} ({state}) through EC2, which is not its own or should be gone");
                }
            }
        }
        Ok(())
    }

    /// Snapshots, images and key pairs: each tenant sees its own (native and
    /// EC2) and never another's.
    fn check_other_views(&mut self, t: usize) -> Result<()> {
        let snapshots = ids_of(&self.api(t, "GET", "/v1/snapshots?limit=1000", None)?);
        for id in &snapshots {
            if self.model.snapshots.get(id).map(|r| r.tenant) != Some(t) {
                bail!("t{t} lists snapshot {id}, which is not its own or should be gone");
            }
        }
        let mine_live = self.model.live(&self.model.snapshots, t, &[Target::Available]);
        if let Some(missing) = mine_live.iter().find(|id| !snapshots.contains(id)) {
            bail!("t{t} does not list its snapshot {missing}");
        }
        let ec2 = self.tenants[t].ec2.clone();
        let described = self.rt.block_on(ec2.describe_snapshots().owner_ids("self").send())?;
        for snap in described.snapshots() {
            let id = snap.snapshot_id().unwrap_or_default();
            if self.model.snapshots.get(id).map(|r| r.tenant) != Some(t) {
                bail!("t{t} sees snapshot {id} through EC2, which is not its own or should be gone");
            }
        }
        let images = ids_of(&self.api(t, "GET", "/v1/images?limit=1000", None)?);
        for (id, owner) in &self.model.images {
            match (*owner == t, images.contains(id)) {
                (true, false) => bail!("t{t} does not list its image {id}"),
                (false, true) => bail!("t{t} lists t{owner}'s private image {id}"),
                _ => {}
            }
        }
        let mut want: Vec<String> =
            self.model.keypairs.keys().filter(|(owner, _)| *owner == t).map(|(_, n)| n.clone()).collect();
        want.sort();
        let listed = self.api(t, "GET", "/v1/keypairs?limit=1000", None)?;
        let mut native: Vec<String> = listed["items"]
            .as_array()
            .map(|k| k.iter().filter_map(|k| k["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        native.sort();
        let pairs = self.rt.block_on(ec2.describe_key_pairs().send())?;
        let mut through_ec2: Vec<String> =
            pairs.key_pairs().iter().filter_map(|k| k.key_name().map(str::to_owned)).collect();
        through_ec2.sort();
        if native != want || through_ec2 != want {
            bail!("t{t}'s key pairs are {want:?}; native lists {native:?}, EC2 {through_ec2:?}");
        }
        Ok(())
    }

    /// The end: everything settled, guests booted, stopped ones off, the audit clean.
    fn check_end(&mut self) -> Result<()> {
        self.settle_all()?;
        self.check_views()?;
        for (id, r) in self.model.instances.clone() {
            if !self.guests {
                break;
            }
            match r.target {
                Target::Running => {
                    self.wait_booted(&id)?;
                    let seen = self.markers(&id, r.tenant)?;
                    if seen != r.boots {
                        bail!("{id} was asked to boot {} times and booted {seen} times", r.boots);
                    }
                    if self.s.domstate(&id).as_deref() != Some("running") {
                        bail!("{id} is running by the API but {:?} in libvirt", self.s.domstate(&id));
                    }
                }
                Target::Stopped if self.s.domstate(&id).as_deref() != Some("shut off") => {
                    bail!("{id} is stopped by the API but {:?} in libvirt", self.s.domstate(&id));
                }
                _ => {}
            }
        }
        let mut last = String::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(180) {
            let out = self.s.kumo(&["admin", "audit", "--host", &self.s.host_name])?;
            last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            if out.status.success() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(3));
        }
        bail!("the audit never came clean: {last}")
    }

    /// The bill agrees with the histories: once the hours after the last
    /// change closed, every instance that no longer runs was billed exactly
    /// the seconds its events show it running (unknown and stopped time is
    /// free), a running one no more than it ran, and no tenant's usage shows
    /// another tenant's resource.
    fn check_bill(&mut self) -> Result<()> {
        std::thread::sleep(Duration::from_secs(2 * BILLING_HOUR_SECS as u64 + 1));
        self.s.kumo_ok(&["billing", "close"])?;
        for t in 0..self.tenants.len() {
            let usage = self.cli(t, &["billing", "usage"])?;
            let rows = usage["resources"].as_array().context("usage resources")?.clone();
            for row in &rows {
                let id = row["resource_id"].as_str().unwrap_or_default();
                if self.model.owners.get(id).is_some_and(|o| *o != t) {
                    bail!("t{t}'s usage shows another tenant's resource: {row}");
                }
            }
            let mine: Vec<String> = self.model.ever.iter().filter(|(_, o)| **o == t).map(|(i, _)| i.clone()).collect();
            for id in mine {
                let events = self.cli(t, &["instance", "events", &id])?;
                let now = kumo_wire::Timestamp::now().millis().div_euclid(1000);
                let ran = crate::billing::running_seconds_until(&events, Some(now));
                let billed = rows
                    .iter()
                    .filter(|r| r["resource_id"] == id.as_str() && r["item"] == "flavor:mini")
                    .map(|r| r["usage_hours"].as_str().unwrap_or("0").parse::<f64>().unwrap_or(f64::NAN))
                    .sum::<f64>()
                    * BILLING_HOUR_SECS as f64;
                let still_running = self.model.instances.get(&id).is_some_and(|r| r.target == Target::Running);
                let agrees =
                    if still_running { billed <= ran as f64 + 1e-9 } else { (billed - ran as f64).abs() < 1e-9 };
                if !agrees {
                    let history: Vec<String> = events["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| e["action"] == "state_changed")
                        .map(|e| format!("{} {}->{}", e["at"], e["detail"]["from"], e["detail"]["to"]))
                        .collect();
                    let lines: Vec<&Value> = rows.iter().filter(|r| r["resource_id"] == id.as_str()).collect();
                    bail!(
                        "t{t}'s {id} ran {ran} s by its events and was billed {billed} s (running now: \
                         {still_running})\nevents: {history:#?}\nusage: {lines:#?}"
                    );
                }
            }
        }
        Ok(())
    }

    fn report(&self, err: &anyhow::Error) -> String {
        let mut out = format!("scenario seed {} failed after {} steps: {err:#}\nsteps:\n", self.seed, self.steps.len());
        for (n, s) in self.steps.iter().enumerate() {
            let _ = writeln!(out, "  {n}: {s}");
        }
        out.push_str(&self.s.logs());
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Instance,
    Volume,
    Snapshot,
}

impl Kind {
    /// The native API's path of one resource of this kind.
    fn path(self, id: &str) -> String {
        match self {
            Kind::Instance => format!("/v1/instances/{id}"),
            Kind::Volume => format!("/v1/volumes/{id}"),
            Kind::Snapshot => format!("/v1/snapshots/{id}"),
        }
    }
}

fn run_seed(seed: u64, steps: usize, guests: bool) {
    let started = Instant::now();
    let mut engine = Engine::new(seed, guests).unwrap();
    let result = (|| -> Result<()> {
        for _ in 0..steps {
            engine.step()?;
            engine.check_views()?;
        }
        engine.check_end()?;
        engine.check_bill()
    })();
    if let Err(err) = result {
        panic!("{}", engine.report(&err));
    }
    let host = if guests { "real guests" } else { "test-driver host" };
    eprintln!(
        "FIGURE scenario ({host}) seed {seed}: {} operations ({} refused requests), {} faults injected, 0 invariant \
         violations, audit clean, {:.0?}",
        engine.steps.len(),
        engine.refused,
        engine.faults,
        started.elapsed()
    );
}

/// Stops the host's libvirtd (SIGTERM, by the PID in its pid file) and starts
/// it again with `scripts/start-libvirt.sh`; its guests keep running.
fn restart_libvirtd() -> Result<()> {
    let pid: i32 = std::fs::read_to_string("/run/libvirtd.pid")?.trim().parse()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "libvirtd" {
        bail!("/run/libvirtd.pid names {pid}, which is {comm:?}, not libvirtd");
    }
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    if !status.success() {
        bail!("kill -TERM {pid} failed");
    }
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("libvirtd {pid} did not stop within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/start-libvirt.sh");
    let out = std::process::Command::new("bash").arg(script).output()?;
    if !out.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// `KUMO_SCENARIO_STEPS` and `KUMO_SCENARIO_SEED`, or the defaults given.
fn steps_and_seed(default_steps: usize, default_seed: u64) -> (usize, u64) {
    let steps = std::env::var("KUMO_SCENARIO_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_steps);
    let seed = std::env::var("KUMO_SCENARIO_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default_seed);
    (steps, seed)
}

#[test]
fn a_seeded_scenario_through_cli_native_and_ec2_with_faults_converges_and_audits_clean() {
    if !enabled() {
        return;
    }
    let (steps, seed) = steps_and_seed(30, 20261203);
    run_seed(seed, steps, true);
}

/// The same engine on a host without guests (libvirt's test driver, the
/// agent's real bridges, dnsmasq, nftables and metadata listener in a
/// namespace of the test's own): many more steps in the same time. Not yet in
/// the suite: about one run in four of 200 steps found SQLite's write lock
/// held for good (every writer then waits out the 10 s busy timeout; a 500 to
/// an EC2 caller). Handlers now run to completion when their client goes away,
/// and the seeds that hit it pass since; it joins the suite once that holds
/// over more runs (issue 11's note). Run it with `--ignored`.
#[test]
#[ignore = "SQLite write lock held for good in about one run in four before the handler-task fix (issue 11); run with --ignored"]
fn a_longer_seeded_scenario_on_a_test_driver_host_converges_and_audits_clean() {
    if !enabled() {
        return;
    }
    let (steps, seed) = steps_and_seed(150, 20261204);
    run_seed(seed, steps, false);
}
