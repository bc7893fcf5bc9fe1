//! [`Hypervisor`] on libvirt through the `virt` crate. Each call runs on the
//! blocking thread pool; the connection is opened lazily and reopened when
//! libvirt reports it dead (e.g. after libvirtd restarted). Every call has a
//! time limit: a libvirtd that stops answering (a stuck QEMU monitor, a hung
//! daemon) turns into [`HypervisorError::Timeout`] for that call, so the agent
//! keeps reporting and converging everything else instead of waiting forever.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kumo_wire::agent::ObservedPower;
use virt::connect::Connect;
use virt::domain::{Domain, DomainShutoffReason, DomainState, DomainStateReason};
use virt::enumutil::Enum;
use virt::error::ErrorNumber;

use super::{DomainInfo, Hypervisor, HypervisorError, NodeResources};
use crate::domain_xml::{disks_of, instance_of, instance_of_metadata, METADATA_NS};

/// A libvirt connection (`qemu:///system` on hosts, `test:///...` in tests).
#[derive(Clone)]
pub struct LibvirtHypervisor {
    uri: String,
    conn: Arc<Mutex<Option<Connect>>>,
    call_timeout: std::time::Duration,
}

pub use crate::config::DEFAULT_CALL_TIMEOUT;

impl std::fmt::Debug for LibvirtHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtHypervisor").field("uri", &self.uri).finish_non_exhaustive()
    }
}

/// Writes a description of a small node (4 CPUs, 8 GiB) for libvirt's test
/// driver into `dir` and returns its URI: a private, daemon-less libvirt for
/// tests and simulations, isolated from every other connection.
pub fn test_node_uri(dir: &Path) -> std::io::Result<String> {
    let file = dir.join("libvirt-test-node.xml");
    std::fs::write(
        &file,
        "<node>\n  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>\
         <cores>4</cores><threads>1</threads></cpu>\n  <memory>8388608</memory>\n</node>\n",
    )?;
    Ok(format!("test://{}", std::path::absolute(&file)?.display()))
}

fn call<'a>(action: &'static str, target: &'a str) -> impl FnOnce(virt::error::Error) -> HypervisorError + 'a {
    move |e| {
        if e.code().is(ErrorNumber::NoDomain) {
            HypervisorError::NoSuchDomain(target.to_owned())
        } else {
            HypervisorError::Call { action, target: target.to_owned(), message: e.message().to_owned() }
        }
    }
}

fn power_of(domain: &Domain) -> Result<ObservedPower, virt::error::Error> {
    let (state, reason) = domain.state()?;
    Ok(match state.known() {
        Some(DomainState::Running | DomainState::Blocked | DomainState::Shutdown) => ObservedPower::Running,
        Some(DomainState::Paused | DomainState::PMSuspended) => ObservedPower::Paused,
        Some(DomainState::Crashed) => ObservedPower::Crashed,
        // With `<on_crash>destroy</on_crash>` a crashed guest ends up shut off
        // "because it crashed": that is a crash, not a guest that powered off.
        Some(DomainState::Shutoff)
            if matches!(reason, Enum::Known(DomainStateReason::Shutoff(Enum::Known(DomainShutoffReason::Crashed)))) =>
        {
            ObservedPower::Crashed
        }
        Some(DomainState::Shutoff) => ObservedPower::Shutoff,
        Some(DomainState::NoState) | None => {
            if domain.is_active()? {
                ObservedPower::Running
            } else {
                ObservedPower::Shutoff
            }
        }
    })
}

fn info_of(domain: &Domain) -> Result<DomainInfo, virt::error::Error> {
    let name = domain.name()?;
    let metadata = domain.metadata(virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(METADATA_NS), 0).ok();
    let instance = metadata.as_deref().and_then(instance_of_metadata).or_else(|| instance_of(&name));
    Ok(DomainInfo { uuid: domain.uuid_string()?, power: power_of(domain)?, instance, name })
}

impl LibvirtHypervisor {
    /// A hypervisor at `uri`; the connection is opened on first use.
    pub fn new(uri: impl Into<String>) -> Self {
        // libvirt prints every error to stderr by default; ours go through tracing.
        virt::error::clear_error_callback();
        Self { uri: uri.into(), conn: Arc::new(Mutex::new(None)), call_timeout: DEFAULT_CALL_TIMEOUT }
    }

    /// The same connection with another per-call time limit.
    pub fn with_call_timeout(mut self, limit: std::time::Duration) -> Self {
        self.call_timeout = limit;
        self
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn connection(&self) -> Result<Connect, HypervisorError> {
        let mut slot = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(conn) = slot.as_ref() {
            if conn.is_alive().unwrap_or(false) {
                return Ok(conn.clone());
            }
            tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
        }
        let conn = Connect::open(Some(&self.uri))
            .map_err(|e| HypervisorError::Connect { uri: self.uri.clone(), message: e.message().to_owned() })?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `f` with a live connection on the blocking thread pool, for at
    /// most the call time limit. A call past it is abandoned (its thread
    /// finishes, or not, on its own) and reported as a timeout of `action` on `target`.
    async fn with<T, F>(&self, action: &'static str, target: &str, f: F) -> Result<T, HypervisorError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, HypervisorError> + Send + 'static,
    {
        let this = self.clone();
        let call = tokio::task::spawn_blocking(move || f(&this.connection()?));
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(done) => done.map_err(|_| HypervisorError::Aborted)?,
            Err(_) => Err(HypervisorError::Timeout { action, target: target.to_owned(), limit: self.call_timeout }),
        }
    }

    /// Runs `op` on the domain called `name`.
    async fn on_domain<T, F>(&self, name: &str, action: &'static str, op: F) -> Result<T, HypervisorError>
    where
        T: Send + 'static,
        F: FnOnce(&Domain) -> Result<T, virt::error::Error> + Send + 'static,
    {
        let target = name.to_owned();
        self.with(action, name, move |conn| {
            let domain = conn.lookup_domain_by_name(&target).map_err(call(action, &target))?;
            op(&domain).map_err(call(action, &target))
        })
        .await
    }
}

#[async_trait]
impl Hypervisor for LibvirtHypervisor {
    async fn node_resources(&self) -> Result<NodeResources, HypervisorError> {
        self.with("node info", "node", |conn| {
            let info = conn.node_info().map_err(call("node info", "node"))?;
            Ok(NodeResources { cpus: info.cpus, memory_mib: info.memory / 1024 })
        })
        .await
    }

    async fn list_domains(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        self.with("list", "domains", |conn| {
            let domains = conn.list_all_domains(0).map_err(call("list", "domains"))?;
            let mut infos = Vec::with_capacity(domains.len());
            for domain in &domains {
                match info_of(domain) {
                    Ok(info) => infos.push(info),
                    // It went away between the listing and the look.
                    Err(e) if e.code().is(ErrorNumber::NoDomain) => {}
                    Err(e) => return Err(call("inspect", "domains")(e)),
                }
            }
            infos.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(infos)
        })
        .await
    }

    async fn sample_domains(&self) -> Result<Vec<kumo_wire::stats::InstanceSample>, HypervisorError> {
        self.with("sample", "domains", |conn| {
            let active = virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE;
            let domains = conn.list_all_domains(active).map_err(call("sample", "domains"))?;
            let mut samples = Vec::with_capacity(domains.len());
            for domain in &domains {
                let sampled = info_of(domain).and_then(|info| match info.instance {
                    Some(instance) if info.power == ObservedPower::Running => {
                        super::sample::sample_domain(domain, instance).map(Some)
                    }
                    _ => Ok(None),
                });
                match sampled {
                    Ok(Some(sample)) => samples.push(sample),
                    Ok(None) => {}
                    // It stopped or went away between the listing and the look.
                    Err(e) if e.code().is(ErrorNumber::NoDomain) || e.code().is(ErrorNumber::OperationInvalid) => {}
                    Err(e) => return Err(call("sample", "domains")(e)),
                }
            }
            samples.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(samples)
        })
        .await
    }

    async fn domain(&self, name: &str) -> Result<Option<DomainInfo>, HypervisorError> {
        match self.on_domain(name, "inspect", info_of).await {
            Ok(info) => Ok(Some(info)),
            Err(HypervisorError::NoSuchDomain(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn define(&self, xml: &str) -> Result<(), HypervisorError> {
        let xml = xml.to_owned();
        self.with("define", "domain", move |conn| {
            conn.define_domain_xml(&xml).map(drop).map_err(|e| HypervisorError::Call {
                action: "define",
                target: "domain".to_owned(),
                message: e.message().to_owned(),
            })
        })
        .await
    }

    async fn start(&self, name: &str) -> Result<(), HypervisorError> {
        self.on_domain(name, "start", |d| d.create()).await
    }

    async fn shutdown(&self, name: &str) -> Result<(), HypervisorError> {
        self.on_domain(name, "shutdown", |d| d.shutdown()).await
    }

    async fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
        self.on_domain(name, "destroy", |d| d.destroy()).await
    }

    async fn undefine(&self, name: &str) -> Result<(), HypervisorError> {
        let flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
        self.on_domain(name, "undefine", move |d| d.undefine_flags(flags)).await
    }

    async fn domain_xml(&self, name: &str, inactive: bool) -> Result<String, HypervisorError> {
        let flags = if inactive { virt::sys::VIR_DOMAIN_XML_INACTIVE } else { 0 };
        self.on_domain(name, "read the XML", move |d| d.xml_desc(flags)).await
    }

    async fn attach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError> {
        let Some(flags) = impact(live, config) else { return Ok(()) };
        let xml = xml.to_owned();
        self.on_domain(name, "attach a disk to", move |d| d.attach_device_flags(&xml, flags)).await
    }

    async fn detach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError> {
        let Some(flags) = impact(live, config) else { return Ok(()) };
        let xml = xml.to_owned();
        self.on_domain(name, "detach a disk from", move |d| d.detach_device_flags(&xml, flags)).await
    }

    async fn resize_disk(&self, name: &str, device: &str, bytes: u64) -> Result<(), HypervisorError> {
        let device = device.to_owned();
        self.on_domain(name, "resize a disk of", move |d| {
            d.block_resize(&device, bytes, virt::sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        })
        .await
    }

    async fn backup_disk(&self, name: &str, device: &str, target: &Path) -> Result<(), HypervisorError> {
        let fail =
            |message: String| HypervisorError::Call { action: "back up a disk of", target: name.to_owned(), message };
        // Every other disk is left out explicitly, or libvirt would back it up too, next to its source.
        let live = self.domain_xml(name, false).await?;
        let disks = disks_of(&live).map_err(|e| fail(format!("cannot read its XML: {e}")))?;
        let others: Vec<String> = disks.into_iter().map(|d| d.target).filter(|t| t != device).collect();
        let xml = backup_xml(device, target, &others);
        let xml_path = target.with_extension("backup.xml");
        tokio::fs::write(&xml_path, xml)
            .await
            .map_err(|e| fail(format!("cannot write {}: {e}", xml_path.display())))?;
        // The `virt` crate has no binding for virDomainBackupBegin; virsh makes the one call.
        let out = virsh(&self.uri, &["backup-begin", name, &xml_path.to_string_lossy()]).await;
        let _ = tokio::fs::remove_file(&xml_path).await;
        let out = out.map_err(fail)?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr).trim().trim_start_matches("error: ").to_owned()));
        }
        let started = std::time::Instant::now();
        loop {
            // virDomainGetJobInfo: the `virt` crate's job_stats() cannot take an
            // empty answer, so only the fixed-size job info is read here.
            let running = self
                .on_domain(name, "follow the backup of", |d| {
                    d.job_info().map(|j| j.r#type != virt::sys::VIR_DOMAIN_JOB_NONE as i32)
                })
                .await?;
            if !running {
                break;
            }
            if started.elapsed() > BACKUP_TIMEOUT {
                return Err(fail(format!("the backup did not finish within {}s", BACKUP_TIMEOUT.as_secs())));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let out = virsh(&self.uri, &["domjobinfo", name, "--completed"]).await.map_err(fail)?;
        let text = String::from_utf8_lossy(&out.stdout);
        match completed_job(&text) {
            CompletedJob::Failed(message) => Err(fail(message)),
            CompletedJob::Completed | CompletedJob::Unknown => match tokio::fs::metadata(target).await {
                Ok(meta) if meta.len() > 0 => Ok(()),
                _ => Err(fail(format!("the backup ended without writing {}", target.display()))),
            },
        }
    }
}

/// What `virsh domjobinfo --completed` says about the last job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CompletedJob {
    Completed,
    Failed(String),
    /// No statistics (already collected, or none kept).
    Unknown,
}

fn completed_job(text: &str) -> CompletedJob {
    let field =
        |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim_start_matches(':').trim().to_owned());
    match field("Job type").as_deref() {
        Some("Completed") => CompletedJob::Completed,
        Some("Failed" | "Cancelled") => {
            CompletedJob::Failed(field("Error message").unwrap_or_else(|| "the backup job failed".to_owned()))
        }
        _ => CompletedJob::Unknown,
    }
}

/// Runs `virsh -c URI ARGS` for at most a minute.
async fn virsh(uri: &str, args: &[&str]) -> Result<std::process::Output, String> {
    let run = tokio::process::Command::new("virsh").arg("-c").arg(uri).args(args).kill_on_drop(true).output();
    match tokio::time::timeout(std::time::Duration::from_secs(60), run).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("cannot run virsh: {e}")),
        Err(_) => Err(format!("virsh {} did not answer within 60s", args.first().copied().unwrap_or_default())),
    }
}

/// The longest a live disk copy may take.
const BACKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// libvirt's flags for changing the running guest and/or its persistent definition.
fn impact(live: bool, config: bool) -> Option<u32> {
    let flags = if live { virt::sys::VIR_DOMAIN_AFFECT_LIVE } else { 0 }
        | if config { virt::sys::VIR_DOMAIN_AFFECT_CONFIG } else { 0 };
    (flags != 0).then_some(flags)
}

/// A push-mode backup of `device` into a new qcow2 `target`, every other disk left out.
pub fn backup_xml(device: &str, target: &Path, others: &[String]) -> String {
    use quick_xml::escape::escape as esc;
    let mut x = String::from("<domainbackup mode='push'>\n  <disks>\n");
    for other in others {
        x.push_str(&format!("    <disk name='{}' backup='no'/>\n", esc(other)));
    }
    x.push_str(&format!(
        "    <disk name='{}' backup='yes' type='file'>\n      <target file='{}'/>\n      <driver type='qcow2'/>\n    </disk>\n",
        esc(device),
        esc(target.to_string_lossy())
    ));
    x.push_str("  </disks>\n</domainbackup>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DomainType;
    use crate::domain_xml::{domain_name, render, Boot, DomainSpec};
    use kumo_wire::InstanceId;

    fn hypervisor() -> (tempfile::TempDir, LibvirtHypervisor) {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = test_node_uri(dir.path()).expect("node file");
        (dir, LibvirtHypervisor::new(uri))
    }

    fn xml_for(instance: &InstanceId) -> String {
        let project = "prj-00000000000000001".parse().expect("id");
        render(&DomainSpec {
            domain_type: DomainType::Qemu,
            instance,
            uuid: &crate::domain_xml::domain_uuid(instance),
            project: &project,
            generation: 1,
            hostname: "t",
            vcpus: 1,
            memory_mib: 128,
            root_disk: Path::new("/nonexistent/disk.qcow2"),
            console_log: Path::new("/nonexistent/console.log"),
            boot: Boot::Disk,
            volumes: &[],
            // libvirt parses (and so validates) a NIC and a config drive too.
            interfaces: &[crate::domain_xml::Interface {
                mac: "02:00:00:00:00:01".into(),
                bridge: "kbr0123456789ab".into(),
                tap: "ktap00000000001".into(),
            }],
            config_drive: Some(Path::new("/nonexistent/cidata.iso")),
        })
    }

    #[tokio::test]
    async fn reads_node_resources() {
        let (_dir, hv) = hypervisor();
        assert_eq!(hv.node_resources().await.expect("node"), NodeResources { cpus: 4, memory_mib: 8192 });
    }

    #[tokio::test]
    async fn walks_a_domain_through_its_lifecycle() {
        let (_dir, hv) = hypervisor();
        let id: InstanceId = "i-00000000000000abc".parse().expect("id");
        let name = domain_name(&id);
        assert_eq!(hv.domain(&name).await.expect("lookup"), None);
        hv.define(&xml_for(&id)).await.expect("define");
        hv.define(&xml_for(&id)).await.expect("redefine keeps the same uuid");
        let info = hv.domain(&name).await.expect("lookup").expect("exists");
        assert_eq!((info.power, info.instance.as_ref()), (ObservedPower::Shutoff, Some(&id)));
        assert_eq!(info.uuid, crate::domain_xml::domain_uuid(&id));
        hv.start(&name).await.expect("start");
        assert_eq!(hv.list_domains().await.expect("list")[0].power, ObservedPower::Running);
        let err = hv.start(&name).await.expect_err("already running");
        assert!(
            matches!(&err, HypervisorError::Call { action: "start", message, .. } if message.contains("already running")),
            "{err}"
        );
        hv.shutdown(&name).await.expect("acpi");
        assert_eq!(hv.domain(&name).await.expect("lookup").map(|d| d.power), Some(ObservedPower::Shutoff));
        hv.start(&name).await.expect("start again");
        hv.destroy(&name).await.expect("destroy");
        hv.undefine(&name).await.expect("undefine");
        assert!(hv.list_domains().await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn missing_domains_bad_xml_and_bad_uris_are_clear_errors() {
        let (_dir, hv) = hypervisor();
        assert_eq!(hv.start("kumo-nothing").await, Err(HypervisorError::NoSuchDomain("kumo-nothing".into())));
        assert_eq!(hv.destroy("kumo-nothing").await, Err(HypervisorError::NoSuchDomain("kumo-nothing".into())));
        let err = hv.define("<domain type='qemu'><name>x</name></domain>").await.expect_err("invalid");
        assert!(err.to_string().starts_with("libvirt define of domain failed: "), "{err}");
        let bad = LibvirtHypervisor::new("test:///nonexistent/node.xml");
        let err = bad.list_domains().await.expect_err("no such file");
        assert!(err.to_string().starts_with("could not connect to libvirt at test:///nonexistent/node.xml: "), "{err}");
    }

    /// A libvirtd that accepts the connection and never answers (as a hung
    /// daemon does): every call ends in a timeout naming it, none hangs.
    #[tokio::test]
    async fn a_libvirtd_that_never_answers_times_out_each_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("libvirt-sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        // Accept and hold every connection, reading nothing.
        let held = Arc::new(Mutex::new(Vec::<std::os::unix::net::UnixStream>::new()));
        let holder = held.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                holder.lock().expect("lock").push(conn);
            }
        });
        let limit = std::time::Duration::from_millis(500);
        let hv = LibvirtHypervisor::new(format!("qemu:///system?socket={}", socket.display())).with_call_timeout(limit);
        let started = std::time::Instant::now();
        let err = hv.list_domains().await.expect_err("no answer");
        assert_eq!(err, HypervisorError::Timeout { action: "list", target: "domains".into(), limit });
        assert!(err.to_string().contains("did not answer within 500ms"), "{err}");
        // The next calls time out too (the stuck one holds the connection slot).
        assert!(matches!(hv.start("kumo-x").await, Err(HypervisorError::Timeout { action: "start", .. })));
        assert!(matches!(hv.node_resources().await, Err(HypervisorError::Timeout { action: "node info", .. })));
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
        // The daemon "recovers" (closes): the abandoned calls end and their
        // threads with them (the runtime waits for them when it stops).
        for conn in held.lock().expect("lock").drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }

    /// libvirt's test driver keeps counters for a running domain's disks and
    /// NICs that grow with time, so sampling is checked on a real libvirt
    /// driver; the e2e test samples a real TCG guest.
    #[tokio::test]
    async fn running_instances_are_sampled_with_their_disks_and_nics() {
        let (_dir, hv) = hypervisor();
        let (running, stopped) =
            ("i-00000000000000ab1".parse().expect("id"), "i-00000000000000ab2".parse().expect("id"));
        for id in [&running, &stopped] {
            hv.define(&xml_for(id)).await.expect("define");
        }
        hv.define(
            "<domain type='test'><name>someone-elses</name><memory>1024</memory><os><type>hvm</type></os></domain>",
        )
        .await
        .expect("define");
        hv.start("someone-elses").await.expect("start");
        hv.start(&domain_name(&running)).await.expect("start");
        let first = hv.sample_domains().await.expect("sample");
        assert_eq!(first.len(), 1, "only running instances: {first:?}");
        let sample = &first[0];
        assert_eq!((&sample.id, sample.vcpus, sample.memory_kib), (&running, 1, 128 * 1024));
        let devices: Vec<&str> = sample.disks.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(devices, ["vda", "sda"], "the root disk and the config drive");
        assert_eq!(sample.nics.len(), 1);
        assert_eq!(sample.nics[0].device, "ktap00000000001");
        assert!(sample.cpu_time_ns > 0 && sample.disks[0].read_bytes > 0 && sample.nics[0].rx_bytes > 0, "{sample:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let second = hv.sample_domains().await.expect("sample");
        assert!(second[0].disks[0].read_bytes >= sample.disks[0].read_bytes, "counters do not go back");
        hv.destroy(&domain_name(&running)).await.expect("destroy");
        assert!(hv.sample_domains().await.expect("sample").is_empty());
    }

    #[tokio::test]
    async fn foreign_domains_are_listed_without_an_instance() {
        let (_dir, hv) = hypervisor();
        hv.define(
            "<domain type='test'><name>someone-elses</name><memory>1024</memory>\
             <os><type>hvm</type></os></domain>",
        )
        .await
        .expect("define");
        let domains = hv.list_domains().await.expect("list");
        assert_eq!(domains.len(), 1);
        assert_eq!((domains[0].name.as_str(), domains[0].instance.as_ref()), ("someone-elses", None));
    }

    #[test]
    fn backups_name_every_other_disk_as_left_out() {
        expect_test::expect![[r#"
            <domainbackup mode='push'>
              <disks>
                <disk name='vda' backup='no'/>
                <disk name='vdb' backup='yes' type='file'>
                  <target file='/snap/snap-1.qcow2.partial'/>
                  <driver type='qcow2'/>
                </disk>
              </disks>
            </domainbackup>
        "#]]
        .assert_eq(&backup_xml("vdb", Path::new("/snap/snap-1.qcow2.partial"), &["vda".to_owned()]));
    }

    #[test]
    fn completed_jobs_are_read_from_virsh() {
        let done =
            "Job type:         Completed   \nOperation:        Backup      \nTime elapsed:     55           ms\n";
        assert_eq!(completed_job(done), CompletedJob::Completed);
        let failed = "Job type:         Failed      \nOperation:        Backup      \nError message:    No space left on device\n";
        assert_eq!(completed_job(failed), CompletedJob::Failed("No space left on device".into()));
        assert_eq!(completed_job("Job type:         None        \n"), CompletedJob::Unknown);
    }
}
