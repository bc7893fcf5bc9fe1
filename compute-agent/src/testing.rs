//! Helpers shared by the unit tests: an in-memory image fetcher, desired-state
//! builders and a converger on libvirt's test driver with real qemu-img.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kumo_storage::{ByteStream, FetchError, ImageCache, ImageFetcher, QemuImgDisks};
use kumo_wire::agent::{DesiredInstance, ImageFileRef, ImageRef, InstanceSpec};
use kumo_wire::api::{DiskFormat, ImageFileRole, ImageKind};
use kumo_wire::{DesiredPower, ImageId, InstanceId};
use sha2::{Digest, Sha256};

use crate::config::DomainType;
use crate::converge::Converger;
use crate::hypervisor::{test_node_uri, Hypervisor, LibvirtHypervisor};

/// Image files held in memory.
#[derive(Default)]
pub struct MemFetcher {
    pub files: Mutex<HashMap<(ImageId, ImageFileRole), Vec<u8>>>,
    pub fetches: AtomicUsize,
}

#[async_trait]
impl ImageFetcher for MemFetcher {
    async fn fetch(&self, image: &ImageId, role: ImageFileRole) -> Result<ByteStream, FetchError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let data = self.files.lock().expect("lock").get(&(image.clone(), role)).cloned();
        let data = data.ok_or("the controller answered 404: no such image file")?;
        Ok(Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(data))])))
    }
}

pub fn file_ref(role: ImageFileRole, data: &[u8]) -> ImageFileRef {
    ImageFileRef { role, size_bytes: data.len() as u64, sha256: hex::encode(Sha256::digest(data)) }
}

impl MemFetcher {
    /// Adds a kernel+initrd image and returns its reference.
    pub fn kernel_image(&self, n: u8) -> ImageRef {
        let id: ImageId = format!("ami-{n:017x}").parse().expect("id");
        let (kernel, initrd) = (format!("kernel {n}").into_bytes(), format!("initrd {n}").into_bytes());
        let files = vec![file_ref(ImageFileRole::Kernel, &kernel), file_ref(ImageFileRole::Initrd, &initrd)];
        let mut map = self.files.lock().expect("lock");
        map.insert((id.clone(), ImageFileRole::Kernel), kernel);
        map.insert((id.clone(), ImageFileRole::Initrd), initrd);
        ImageRef { id, kind: ImageKind::Kernel, disk_format: None, files }
    }

    /// Adds a disk image with the given bytes.
    pub fn disk_image(&self, n: u8, data: Vec<u8>, format: DiskFormat) -> ImageRef {
        let id: ImageId = format!("ami-{n:017x}").parse().expect("id");
        let files = vec![file_ref(ImageFileRole::Disk, &data)];
        self.files.lock().expect("lock").insert((id.clone(), ImageFileRole::Disk), data);
        ImageRef { id, kind: ImageKind::Disk, disk_format: Some(format), files }
    }
}

pub fn instance_id(n: u32) -> InstanceId {
    format!("i-{n:017x}").parse().expect("id")
}

pub fn desired(id: &InstanceId, generation: u64, power: DesiredPower, image: &ImageRef) -> DesiredInstance {
    DesiredInstance {
        id: id.clone(),
        generation,
        applied_generation: 0,
        power,
        reboot_generation: None,
        spec: InstanceSpec {
            project_id: "prj-00000000000000001".parse().expect("id"),
            name: "web-1".into(),
            vcpus: 1,
            memory_mib: 128,
            disk_gib: 1,
            image: image.clone(),
            user_data: None,
            ssh_public_key: None,
        },
        volumes: vec![],
        ports: vec![],
        metadata: Default::default(),
    }
}

/// A converger on a private test-driver libvirt, with its state in a temp dir.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub libvirt: Arc<LibvirtHypervisor>,
    pub disks: Arc<QemuImgDisks>,
    pub fetcher: Arc<MemFetcher>,
    pub converger: Converger,
}

impl Harness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let libvirt = Arc::new(LibvirtHypervisor::new(test_node_uri(dir.path()).expect("node")));
        Self::with_hypervisor(dir, libvirt.clone(), libvirt)
    }

    pub fn with_hypervisor(
        dir: tempfile::TempDir,
        libvirt: Arc<LibvirtHypervisor>,
        hypervisor: Arc<dyn Hypervisor>,
    ) -> Self {
        let disks = Arc::new(QemuImgDisks::new(dir.path().join("instances")));
        let fetcher = Arc::new(MemFetcher::default());
        let images = Arc::new(ImageCache::new(dir.path().join("images"), fetcher.clone()));
        let converger = Converger::new(hypervisor, disks.clone(), images, DomainType::Qemu, Duration::from_millis(600));
        Self { dir, libvirt, disks, fetcher, converger }
    }
}
