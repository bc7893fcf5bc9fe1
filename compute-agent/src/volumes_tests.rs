//! Volume and snapshot work against libvirt's test driver with real qemu-img
//! files; live disk copies go through a stand-in (the test driver has no backup jobs).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use kumo_storage::FileVolumeBackend;
use kumo_wire::agent::{AttachedVolume, DesiredSnapshot, DesiredVolume, SnapshotRef, SnapshotSource};
use kumo_wire::{DesiredPower, SnapshotId};

use super::*;
use crate::hypervisor::{DomainInfo, NodeResources};
use crate::snapshots::{SnapshotUploader, SnapshotWork, UploadError};
use crate::testing::{desired, instance_id, Harness};

fn vol(n: u8) -> VolumeId {
    format!("vol-{n:017x}").parse().expect("id")
}

fn snap(n: u8) -> SnapshotId {
    format!("snap-{n:017x}").parse().expect("id")
}

/// Disks of one domain: (target, source file).
type Disks = Vec<(String, PathBuf)>;

/// libvirt's test driver for domains, with the disk handling it lacks (hot-plug,
/// detach, live copies) simulated: each domain's persistent and running disks
/// are tracked here and shown as a minimal domain XML; a live copy is made by
/// `qemu-img convert -U` (what a backup job produces).
#[derive(Debug)]
struct SimulatedDisks {
    inner: Arc<crate::hypervisor::LibvirtHypervisor>,
    log: Mutex<Vec<String>>,
    config: Mutex<HashMap<String, Disks>>,
    live: Mutex<HashMap<String, Disks>>,
    /// Live unplug requests the "guest" misses (a guest still booting).
    missed_unplugs: Mutex<u32>,
}

impl SimulatedDisks {
    fn new(inner: Arc<crate::hypervisor::LibvirtHypervisor>) -> Self {
        Self {
            inner,
            log: Mutex::default(),
            config: Mutex::default(),
            live: Mutex::default(),
            missed_unplugs: Mutex::default(),
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }

    fn name_of(xml: &str) -> String {
        let start = xml.find("<name>").map_or(0, |i| i + 6);
        xml[start..].split('<').next().unwrap_or_default().to_owned()
    }

    fn xml(disks: &Disks) -> String {
        let mut x = String::from("<domain><devices>");
        for (target, source) in disks {
            x.push_str(&format!(
                "<disk type='file'><source file='{}'/><target dev='{target}'/></disk>",
                source.display()
            ));
        }
        x.push_str("</devices></domain>");
        x
    }

    fn change(map: &Mutex<HashMap<String, Disks>>, name: &str, xml: &str, add: bool) {
        let disk = disks_of(xml).expect("xml").remove(0);
        let mut map = map.lock().expect("lock");
        let disks = map.entry(name.to_owned()).or_default();
        disks.retain(|(t, _)| *t != disk.target);
        if add {
            disks.push((disk.target, disk.source.expect("file")));
        }
    }
}

#[async_trait]
impl Hypervisor for SimulatedDisks {
    async fn node_resources(&self) -> Result<NodeResources, HypervisorError> {
        self.inner.node_resources().await
    }
    async fn list_domains(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        self.inner.list_domains().await
    }
    async fn domain(&self, name: &str) -> Result<Option<DomainInfo>, HypervisorError> {
        self.inner.domain(name).await
    }
    async fn define(&self, xml: &str) -> Result<(), HypervisorError> {
        self.inner.define(xml).await?;
        let disks = disks_of(xml).expect("xml").into_iter().map(|d| (d.target, d.source.expect("file"))).collect();
        self.config.lock().expect("lock").insert(Self::name_of(xml), disks);
        Ok(())
    }
    async fn start(&self, name: &str) -> Result<(), HypervisorError> {
        self.inner.start(name).await?;
        let disks = self.config.lock().expect("lock").get(name).cloned().unwrap_or_default();
        self.live.lock().expect("lock").insert(name.to_owned(), disks);
        Ok(())
    }
    async fn shutdown(&self, name: &str) -> Result<(), HypervisorError> {
        self.inner.shutdown(name).await?;
        self.live.lock().expect("lock").remove(name);
        Ok(())
    }
    async fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
        self.inner.destroy(name).await?;
        self.live.lock().expect("lock").remove(name);
        Ok(())
    }
    async fn undefine(&self, name: &str) -> Result<(), HypervisorError> {
        self.inner.undefine(name).await?;
        self.config.lock().expect("lock").remove(name);
        Ok(())
    }
    async fn domain_xml(&self, name: &str, inactive: bool) -> Result<String, HypervisorError> {
        let map = if inactive { &self.config } else { &self.live };
        let map = map.lock().expect("lock");
        let fallback = if inactive { None } else { self.config.lock().expect("lock").get(name).cloned() };
        Ok(Self::xml(&map.get(name).cloned().or(fallback).unwrap_or_default()))
    }
    async fn attach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError> {
        if live {
            Self::change(&self.live, name, xml, true);
        }
        if config {
            Self::change(&self.config, name, xml, true);
        }
        self.log.lock().expect("lock").push(format!("attach {name} live={live} config={config}"));
        Ok(())
    }
    async fn detach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError> {
        let missed = {
            let mut missed = self.missed_unplugs.lock().expect("lock");
            let now = live && *missed > 0;
            *missed = missed.saturating_sub(u32::from(now));
            now
        };
        if live && !missed {
            Self::change(&self.live, name, xml, false);
        }
        if config {
            Self::change(&self.config, name, xml, false);
        }
        self.log.lock().expect("lock").push(format!("detach {name} live={live} config={config}"));
        Ok(())
    }
    async fn resize_disk(&self, name: &str, device: &str, bytes: u64) -> Result<(), HypervisorError> {
        self.log.lock().expect("lock").push(format!("resize {name} {device} {bytes}"));
        Ok(())
    }
    async fn backup_disk(&self, name: &str, device: &str, target: &Path) -> Result<(), HypervisorError> {
        let xml = self.domain_xml(name, false).await?;
        let source =
            disks_of(&xml).expect("xml").into_iter().find(|d| d.target == device).and_then(|d| d.source).expect("disk");
        let out = std::process::Command::new("qemu-img")
            .args(["convert", "-U", "-O", "qcow2"])
            .arg(&source)
            .arg(target)
            .output()
            .expect("qemu-img");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        self.log.lock().expect("lock").push(format!("backup {name} {device}"));
        Ok(())
    }
}

/// Keeps what it was sent.
#[derive(Debug, Default)]
struct KeepUploads(Mutex<Vec<(SnapshotId, serde_json::Value)>>);

#[async_trait]
impl SnapshotUploader for KeepUploads {
    async fn upload(&self, snapshot: &SnapshotId, file: &Path) -> Result<(), UploadError> {
        let out = std::process::Command::new("qemu-img").args(["info", "--output=json"]).arg(file).output()?;
        self.0.lock().expect("lock").push((snapshot.clone(), serde_json::from_slice(&out.stdout)?));
        Ok(())
    }
}

struct Rig {
    h: Harness,
    hv: Arc<SimulatedDisks>,
    work: VolumeWork,
    snaps: SnapshotWork,
    uploads: Arc<KeepUploads>,
    backend: Arc<FileVolumeBackend>,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let libvirt = Arc::new(crate::hypervisor::LibvirtHypervisor::new(
        crate::hypervisor::test_node_uri(dir.path()).expect("node"),
    ));
    let hv = Arc::new(SimulatedDisks::new(libvirt.clone()));
    let backend = Arc::new(FileVolumeBackend::new(VolumeBackendKind::Local, dir.path().join("local")));
    let backends = Backends::default().with(backend.clone());
    let locks = Arc::new(InstanceLocks::default());
    let mut h = Harness::with_hypervisor(dir, libvirt, hv.clone());
    h.converger = h.converger.with_storage(locks.clone(), backends.clone());
    let uploads = Arc::new(KeepUploads::default());
    let work = VolumeWork::new(hv.clone(), backends.clone(), locks.clone());
    let snaps =
        SnapshotWork::new(hv.clone(), backends, locks, h.disks.clone(), h.dir.path().join("work"), uploads.clone());
    Rig { h, hv, work, snaps, uploads, backend }
}

fn volume(id: &VolumeId, generation: u64, size_gib: u64, attach: Option<(&InstanceId, &str)>) -> DesiredVolume {
    DesiredVolume {
        id: id.clone(),
        backend: VolumeBackendKind::Local,
        generation,
        applied_generation: 0,
        present: true,
        size_gib,
        source: None,
        attach: attach.map(|(i, d)| VolumeAttachment { instance: i.clone(), device: d.into() }),
    }
}

async fn targets(r: &Rig, instance: &InstanceId, inactive: bool) -> Vec<String> {
    let xml = r.hv.domain_xml(&domain_name(instance), inactive).await.expect("xml");
    disks_of(&xml).expect("xml").into_iter().map(|d| d.target).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_created_hot_plugged_grown_unplugged_and_deleted() {
    let r = rig();
    let image = r.h.fetcher.kernel_image(1);
    let i = instance_id(1);
    r.h.converger.apply(&desired(&i, 1, DesiredPower::Running, &image)).await.expect("run");
    let v = vol(1);

    assert_eq!(
        r.work.apply(&volume(&v, 1, 1, None)).await.expect("create"),
        Outcome::Done { stored_bytes: r.backend.volume_stored_bytes(&v).await.expect("size") }
    );
    assert_eq!(r.backend.volume_size(&v).await.expect("size"), Some(GIB));

    // Attach: hot-plugged into the running guest and kept in its definition.
    r.work.apply(&volume(&v, 2, 1, Some((&i, "vdb")))).await.expect("attach");
    assert_eq!(targets(&r, &i, false).await, ["vda", "vdb"]);
    assert_eq!(targets(&r, &i, true).await, ["vda", "vdb"]);
    // Again: nothing changes.
    r.work.apply(&volume(&v, 2, 1, Some((&i, "vdb")))).await.expect("again");
    assert_eq!(targets(&r, &i, false).await, ["vda", "vdb"]);

    // A redefinition of the domain (a stop and start) keeps the volume.
    let mut stop = desired(&i, 2, DesiredPower::Stopped, &image);
    stop.volumes = vec![AttachedVolume { id: v.clone(), backend: VolumeBackendKind::Local, device: "vdb".into() }];
    r.h.converger.apply(&stop).await.expect("stop");
    assert_eq!(targets(&r, &i, true).await, ["vda", "vdb"]);
    let mut start = stop.clone();
    (start.generation, start.power) = (3, DesiredPower::Running);
    r.h.converger.apply(&start).await.expect("start");

    // Grow while attached: through the running guest.
    r.work.apply(&volume(&v, 3, 2, Some((&i, "vdb")))).await.expect("grow");
    assert!(r.hv.log().contains(&format!("resize {} vdb {}", domain_name(&i), 2 * GIB)));

    // Detach, then grow offline.
    r.work.apply(&volume(&v, 4, 2, None)).await.expect("detach");
    assert_eq!(targets(&r, &i, false).await, ["vda"]);
    assert_eq!(targets(&r, &i, true).await, ["vda"]);
    r.work.apply(&volume(&v, 5, 3, None)).await.expect("grow offline");
    assert_eq!(r.backend.volume_size(&v).await.expect("size"), Some(3 * GIB));

    // Delete: detached from everything first, then the file goes.
    r.work.apply(&volume(&v, 6, 3, Some((&i, "vdb")))).await.expect("attach again");
    let mut gone = volume(&v, 7, 3, None);
    gone.present = false;
    r.work.apply(&gone).await.expect("delete");
    assert_eq!(targets(&r, &i, true).await, ["vda"]);
    assert_eq!(r.backend.list().await.expect("list"), (vec![], vec![]));
}

/// Found by the e2e scenario engine: a disk unplugged while the guest was
/// still booting was never released (the guest missed the one ACPI event), and
/// the volume went to `error` after a minute. The agent asks again.
#[tokio::test(flavor = "multi_thread")]
async fn an_unplug_request_the_guest_missed_is_sent_again() {
    let r = rig();
    let image = r.h.fetcher.kernel_image(1);
    let i = instance_id(1);
    r.h.converger.apply(&desired(&i, 1, DesiredPower::Running, &image)).await.expect("run");
    let v = vol(1);
    r.work.apply(&volume(&v, 1, 1, None)).await.expect("create");
    r.work.apply(&volume(&v, 2, 1, Some((&i, "vdb")))).await.expect("attach");
    *r.hv.missed_unplugs.lock().expect("lock") = 1;
    r.work.apply(&volume(&v, 3, 1, None)).await.expect("detached on the second request");
    assert_eq!(targets(&r, &i, false).await, ["vda"]);
    assert_eq!(targets(&r, &i, true).await, ["vda"]);
    let requests = r.hv.log().iter().filter(|l| l.starts_with("detach ")).count();
    assert_eq!(requests, 2, "{:?}", r.hv.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn attaching_to_an_instance_without_a_domain_waits_and_unknown_backends_fail() {
    let r = rig();
    let v = vol(2);
    let outcome = r.work.apply(&volume(&v, 2, 1, Some((&instance_id(9), "vdb")))).await.expect("wait");
    assert_eq!(outcome, Outcome::Waiting(format!("instance {} has no domain on this host yet", instance_id(9))));
    let mut shared = volume(&vol(3), 1, 1, None);
    shared.backend = VolumeBackendKind::Shared;
    let err = r.work.apply(&shared).await.expect_err("no shared dir");
    assert_eq!(
        err.to_string(),
        "this host does not serve shared volumes (set shared_volume_dir in the agent's configuration)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_snapshots_are_live_copies_when_attached_and_feed_new_volumes() {
    let r = rig();
    let image = r.h.fetcher.kernel_image(1);
    let i = instance_id(1);
    r.h.converger.apply(&desired(&i, 1, DesiredPower::Running, &image)).await.expect("run");
    let v = vol(4);
    r.work.apply(&volume(&v, 2, 1, Some((&i, "vdb")))).await.expect("attach");
    let take = |id: SnapshotId, present: bool, attached: bool| DesiredSnapshot {
        id,
        generation: if present { 1 } else { 2 },
        applied_generation: 0,
        present,
        source: SnapshotSource::Volume {
            volume: v.clone(),
            backend: VolumeBackendKind::Local,
            attached_to: attached.then(|| i.clone()),
        },
    };
    let done = r.snaps.apply(&take(snap(1), true, true)).await.expect("live");
    assert!(matches!(done, Outcome::Done { stored_bytes: Some(b) } if b > 0), "{done:?}");
    assert_eq!(
        r.hv.log().iter().filter(|l| l.starts_with("backup")).cloned().collect::<Vec<_>>(),
        [format!("backup {} vdb", domain_name(&i))]
    );
    r.work.apply(&volume(&v, 3, 1, None)).await.expect("detach");
    r.snaps.apply(&take(snap(2), true, false)).await.expect("offline");
    assert_eq!(r.hv.log().iter().filter(|l| l.starts_with("backup")).count(), 1, "a detached volume is copied offline");

    let mut copy = volume(&vol(5), 1, 2, None);
    copy.source = Some(SnapshotRef { id: snap(1), backend: VolumeBackendKind::Local });
    r.work.apply(&copy).await.expect("from snapshot");
    assert_eq!(r.backend.volume_size(&vol(5)).await.expect("size"), Some(2 * GIB));
    r.snaps.apply(&take(snap(1), false, false)).await.expect("delete");
    r.snaps.apply(&take(snap(2), false, false)).await.expect("delete");
    assert_eq!(r.backend.list().await.expect("list").1, Vec::<SnapshotId>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_snapshot_copies_the_root_disk_flattened_and_uploads_it() {
    let r = rig();
    let base = r.h.dir.path().join("base.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("1G")
        .output()
        .expect("qemu-img");
    assert!(out.status.success());
    let image = r.h.fetcher.disk_image(7, std::fs::read(&base).expect("read"), kumo_wire::api::DiskFormat::Qcow2);
    let i = instance_id(7);
    r.h.converger.apply(&desired(&i, 1, DesiredPower::Running, &image)).await.expect("run");
    let d = DesiredSnapshot {
        id: snap(7),
        generation: 1,
        applied_generation: 0,
        present: true,
        source: SnapshotSource::Instance { instance: i.clone(), image: "ami-00000000000000070".parse().expect("id") },
    };
    r.snaps.apply(&d).await.expect("snapshot");
    let uploads = r.uploads.0.lock().expect("lock").clone();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].0, snap(7));
    assert_eq!(uploads[0].1["format"], "qcow2");
    assert!(uploads[0].1.get("backing-filename").is_none(), "standalone: {}", uploads[0].1);
    assert_eq!(
        r.hv.log().iter().filter(|l| l.starts_with("backup")).cloned().collect::<Vec<_>>(),
        [format!("backup {} vda", domain_name(&i))],
        "taken live"
    );
    assert!(r.snaps.staged().await.is_empty(), "nothing staged is left");

    // A stopped instance's disk is copied offline, its base image flattened into the copy.
    r.h.converger.apply(&desired(&i, 2, DesiredPower::Stopped, &image)).await.expect("stop");
    let stopped = DesiredSnapshot { id: snap(8), ..d };
    r.snaps.apply(&stopped).await.expect("snapshot");
    let uploads = r.uploads.0.lock().expect("lock").clone();
    assert_eq!((uploads.len(), uploads[1].1["virtual-size"].as_u64()), (2, Some(GIB)));
    assert!(uploads[1].1.get("backing-filename").is_none(), "flattened: {}", uploads[1].1);
    assert_eq!(r.hv.log().iter().filter(|l| l.starts_with("backup")).count(), 1, "no live copy of a stopped guest");
}
