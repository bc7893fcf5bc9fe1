//! Convergence against libvirt's test driver with real qemu-img disks.

use std::time::Instant;

use async_trait::async_trait;
use kumo_storage::InstanceDisks as _;
use kumo_wire::api::DiskFormat;

use super::*;
use crate::hypervisor::{DomainInfo, NodeResources};
use crate::testing::{desired, instance_id, Harness};

fn state(h: &Harness, id: &InstanceId) -> Option<ObservedPower> {
    let rt = tokio::runtime::Handle::current();
    let name = domain_name(id);
    tokio::task::block_in_place(|| rt.block_on(h.libvirt.domain(&name))).expect("lookup").map(|d| d.power)
}

#[tokio::test(flavor = "multi_thread")]
async fn running_kernel_image_is_fetched_built_defined_and_started() {
    let h = Harness::new();
    let image = h.fetcher.kernel_image(1);
    let id = instance_id(1);
    let want = desired(&id, 1, DesiredPower::Running, &image);
    assert_eq!(h.converger.apply(&want).await.expect("apply"), ObservedPower::Running);
    assert_eq!(state(&h, &id), Some(ObservedPower::Running));
    assert!(h.disks.root_disk(&id).exists());
    assert!(h.dir.path().join("images").join(image.id.as_str()).join("kernel").exists());
    assert!(h.dir.path().join("images").join(image.id.as_str()).join("initrd").exists());
    // Applying again changes nothing and fetches nothing.
    assert_eq!(h.converger.apply(&want).await.expect("again"), ObservedPower::Running);
    assert_eq!(h.fetcher.fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_start_reboot_and_delete() {
    let h = Harness::new();
    let image = h.fetcher.kernel_image(2);
    let id = instance_id(2);
    h.converger.apply(&desired(&id, 1, DesiredPower::Running, &image)).await.expect("run");
    std::fs::write(h.converger.console_log(&id), b"boot log").expect("log");

    assert_eq!(
        h.converger.apply(&desired(&id, 2, DesiredPower::Stopped, &image)).await.expect("stop"),
        ObservedPower::Shutoff
    );
    assert_eq!(state(&h, &id), Some(ObservedPower::Shutoff));
    assert!(h.disks.root_disk(&id).exists(), "a stopped instance keeps its disk");

    h.converger.apply(&desired(&id, 3, DesiredPower::Running, &image)).await.expect("start");
    assert_eq!(state(&h, &id), Some(ObservedPower::Running));

    let mut reboot = desired(&id, 4, DesiredPower::Running, &image);
    reboot.reboot_generation = Some(4);
    assert_eq!(h.converger.apply(&reboot).await.expect("reboot"), ObservedPower::Running);
    assert_eq!(state(&h, &id), Some(ObservedPower::Running));

    assert_eq!(
        h.converger.apply(&desired(&id, 5, DesiredPower::Deleted, &image)).await.expect("delete"),
        ObservedPower::Absent
    );
    assert_eq!(state(&h, &id), None);
    assert!(!h.disks.instance_dir(&id).exists(), "disk and console log are gone");
    // Deleting what is gone is fine.
    h.converger.apply(&desired(&id, 5, DesiredPower::Deleted, &image)).await.expect("delete again");
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_instance_is_defined_but_not_started() {
    let h = Harness::new();
    let image = h.fetcher.kernel_image(3);
    let id = instance_id(3);
    h.converger.apply(&desired(&id, 1, DesiredPower::Stopped, &image)).await.expect("stop");
    assert_eq!(state(&h, &id), Some(ObservedPower::Shutoff));
}

/// libvirt's test driver, except that guests ignore the ACPI power button
/// (its first `.1` presses; `usize::MAX`: always), like a guest still booting.
#[derive(Debug)]
struct DeafGuests(Arc<crate::hypervisor::LibvirtHypervisor>, usize, std::sync::atomic::AtomicUsize);

impl DeafGuests {
    fn new(libvirt: Arc<crate::hypervisor::LibvirtHypervisor>, deaf_presses: usize) -> Self {
        Self(libvirt, deaf_presses, std::sync::atomic::AtomicUsize::new(0))
    }
}

#[async_trait]
impl Hypervisor for DeafGuests {
    async fn node_resources(&self) -> Result<NodeResources, HypervisorError> {
        self.0.node_resources().await
    }
    async fn list_domains(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        self.0.list_domains().await
    }
    async fn domain(&self, name: &str) -> Result<Option<DomainInfo>, HypervisorError> {
        self.0.domain(name).await
    }
    async fn define(&self, xml: &str) -> Result<(), HypervisorError> {
        self.0.define(xml).await
    }
    async fn start(&self, name: &str) -> Result<(), HypervisorError> {
        self.0.start(name).await
    }
    async fn shutdown(&self, name: &str) -> Result<(), HypervisorError> {
        if self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < self.1 {
            return Ok(());
        }
        self.0.shutdown(name).await
    }
    async fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
        self.0.destroy(name).await
    }
    async fn undefine(&self, name: &str) -> Result<(), HypervisorError> {
        self.0.undefine(name).await
    }
    async fn domain_xml(&self, name: &str, inactive: bool) -> Result<String, HypervisorError> {
        self.0.domain_xml(name, inactive).await
    }
    async fn attach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError> {
        self.0.attach_device(name, xml, live, config).await
    }
    async fn detach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError> {
        self.0.detach_device(name, xml, live, config).await
    }
    async fn resize_disk(&self, name: &str, device: &str, bytes: u64) -> Result<(), HypervisorError> {
        self.0.resize_disk(name, device, bytes).await
    }
    async fn backup_disk(&self, name: &str, device: &str, target: &std::path::Path) -> Result<(), HypervisorError> {
        self.0.backup_disk(name, device, target).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_ignores_acpi_is_destroyed_after_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let libvirt = Arc::new(crate::hypervisor::LibvirtHypervisor::new(
        crate::hypervisor::test_node_uri(dir.path()).expect("node"),
    ));
    let h = Harness::with_hypervisor(dir, libvirt.clone(), Arc::new(DeafGuests::new(libvirt, usize::MAX)));
    let image = h.fetcher.kernel_image(4);
    let id = instance_id(4);
    h.converger.apply(&desired(&id, 1, DesiredPower::Running, &image)).await.expect("run");
    let started = Instant::now();
    h.converger.apply(&desired(&id, 2, DesiredPower::Stopped, &image)).await.expect("stop");
    assert!(started.elapsed() >= Duration::from_millis(600), "waited for the guest first");
    assert_eq!(state(&h, &id), Some(ObservedPower::Shutoff));
}

/// Issue 11, item 8: a guest forced off after the ACPI timeout is reported
/// (the controller records the notice as an event of the instance).
#[tokio::test(flavor = "multi_thread")]
async fn a_forced_reset_is_reported_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let libvirt = Arc::new(crate::hypervisor::LibvirtHypervisor::new(
        crate::hypervisor::test_node_uri(dir.path()).expect("node"),
    ));
    let h = Harness::with_hypervisor(dir, libvirt.clone(), Arc::new(DeafGuests::new(libvirt, usize::MAX)));
    let image = h.fetcher.kernel_image(4);
    let id = instance_id(4);
    h.converger.apply(&desired(&id, 1, DesiredPower::Running, &image)).await.expect("run");
    assert!(h.converger.notices().pending().is_empty());
    let mut reboot = desired(&id, 2, DesiredPower::Running, &image);
    reboot.reboot_generation = Some(2);
    h.converger.apply(&reboot).await.expect("reboot");
    assert_eq!(state(&h, &id), Some(ObservedPower::Running));
    let notices = h.converger.notices().pending();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!((notices[0].instance.clone(), notices[0].action.as_str()), (id.clone(), "forced_reset"));
    assert_eq!(notices[0].key, "forced_reset:2");
    assert_eq!(notices[0].message, "forced reset because the guest ignored the ACPI request after 1 s");
    h.converger.notices().acknowledge(&notices);

    h.converger.apply(&desired(&id, 3, DesiredPower::Stopped, &image)).await.expect("stop");
    let notices = h.converger.notices().pending();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].action, "forced_power_off");
    assert!(
        notices[0].message.starts_with("forced power-off because the guest ignored the ACPI request"),
        "{notices:?}"
    );
}

/// A guest still booting loses the first ACPI press; the agent presses again
/// and the guest goes down cleanly, without a forced reset.
#[tokio::test(flavor = "multi_thread")]
async fn acpi_is_pressed_again_until_the_guest_hears_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let libvirt = Arc::new(crate::hypervisor::LibvirtHypervisor::new(
        crate::hypervisor::test_node_uri(dir.path()).expect("node"),
    ));
    let mut h = Harness::with_hypervisor(dir, libvirt.clone(), Arc::new(DeafGuests::new(libvirt, 1)));
    h.converger = h.converger.with_acpi_retry(Duration::from_millis(200));
    let image = h.fetcher.kernel_image(4);
    let id = instance_id(4);
    h.converger.apply(&desired(&id, 1, DesiredPower::Running, &image)).await.expect("run");
    let mut reboot = desired(&id, 2, DesiredPower::Running, &image);
    reboot.reboot_generation = Some(2);
    let started = Instant::now();
    h.converger.apply(&reboot).await.expect("reboot");
    assert!(started.elapsed() < Duration::from_millis(600), "no wait for the whole timeout: {:?}", started.elapsed());
    assert_eq!(state(&h, &id), Some(ObservedPower::Running));
    assert!(h.converger.notices().pending().is_empty(), "a clean reboot is no forced reset");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_image_fails_with_a_readable_reason_and_defines_nothing() {
    let h = Harness::new();
    let mut image = h.fetcher.kernel_image(5);
    image.files[1].sha256 = "00".repeat(32);
    let id = instance_id(5);
    let err = h.converger.apply(&desired(&id, 1, DesiredPower::Running, &image)).await.expect_err("corrupt");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "image {} initrd: checksum mismatch: expected sha256 {}, got ",
            image.id,
            "00".repeat(32)
        )),
        "{msg}"
    );
    assert_eq!(state(&h, &id), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn image_problems_are_reported() {
    let h = Harness::new();
    let id = instance_id(6);

    let mut no_initrd = h.fetcher.kernel_image(6);
    no_initrd.files.retain(|f| f.role == ImageFileRole::Kernel);
    let err = h.converger.apply(&desired(&id, 1, DesiredPower::Running, &no_initrd)).await.expect_err("no initrd");
    assert_eq!(err.to_string(), format!("image {} has no initrd file", no_initrd.id));

    let mut unformatted = h.fetcher.disk_image(7, b"raw bytes".to_vec(), DiskFormat::Raw);
    unformatted.disk_format = None;
    let err = h.converger.apply(&desired(&id, 1, DesiredPower::Running, &unformatted)).await.expect_err("format");
    assert_eq!(err.to_string(), format!("image {} is a disk image without a disk format", unformatted.id));

    let mut gone = h.fetcher.kernel_image(8);
    gone.id = "ami-000000000000000ff".parse().expect("id");
    let err = h.converger.apply(&desired(&id, 1, DesiredPower::Running, &gone)).await.expect_err("404");
    assert_eq!(
        crate::error_chain(&err),
        "image ami-000000000000000ff kernel: download failed: the controller answered 404: no such image file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_images_boot_from_an_overlay_and_must_fit_the_flavor() {
    let h = Harness::new();
    let base = h.dir.path().join("base.qcow2");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("2G")
        .status()
        .expect("qemu-img");
    assert!(status.success());
    let image = h.fetcher.disk_image(9, std::fs::read(&base).expect("read"), DiskFormat::Qcow2);

    let id = instance_id(9);
    let mut big = desired(&id, 1, DesiredPower::Running, &image);
    big.spec.disk_gib = 3;
    h.converger.apply(&big).await.expect("run");
    assert_eq!(state(&h, &id), Some(ObservedPower::Running));

    let small_id = instance_id(10);
    let err = h.converger.apply(&desired(&small_id, 1, DesiredPower::Running, &image)).await.expect_err("too small");
    assert_eq!(
        err.to_string(),
        "the requested root disk of 1 GiB is smaller than the image's virtual size of 2147483648 bytes"
    );
    assert_eq!(state(&h, &small_id), None);
}

fn lan() -> kumo_wire::network::DesiredNetwork {
    kumo_wire::network::DesiredNetwork {
        id: "net-0000000000000000a".parse().expect("id"),
        vlan_id: 100,
        cidr: "10.9.0.0/24".parse().expect("cidr"),
        gateway: "10.9.0.1".parse().expect("ip"),
        dns_servers: vec![],
    }
}

fn with_port(mut d: DesiredInstance, net: &kumo_wire::network::DesiredNetwork) -> DesiredInstance {
    d.ports = vec![kumo_wire::network::DesiredPort {
        id: "eni-0000000000000000b".parse().expect("id"),
        network: net.id.clone(),
        mac: "02:00:00:00:00:0b".into(),
        ip: "10.9.0.5".parse().expect("ip"),
        ingress: vec![],
        egress: None,
    }];
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_network_fails_the_instance_before_anything_is_defined() {
    let mut h = Harness::new();
    let status = crate::networking::NetworkStatus::default();
    h.converger = h.converger.with_networks(status.clone());
    let image = h.fetcher.kernel_image(7);
    let id = instance_id(7);
    let net = lan();
    let want = with_port(desired(&id, 1, DesiredPower::Running, &image), &net);

    let err = h.converger.apply(&want).await.expect_err("not plumbed");
    assert_eq!(
        err.to_string(),
        "network net-0000000000000000a of port eni-0000000000000000b is not plumbed on this host yet"
    );
    assert_eq!(state(&h, &id), None);

    let refusal = "network net-0000000000000000a needs an 802.1Q VLAN link (id 100) on trunk eth1, but this host's kernel has no 802.1Q support";
    status.set([(net.id.clone(), Err(refusal.to_owned()))].into());
    assert_eq!(h.converger.apply(&want).await.expect_err("refused").to_string(), refusal);
    assert_eq!(state(&h, &id), None, "no domain for an instance whose network is refused");

    status.set([(net.id.clone(), Ok((net.clone(), "kbr0000000000000".to_owned())))].into());
    assert_eq!(h.converger.apply(&want).await.expect("plumbed"), ObservedPower::Running);
    let xml = h.libvirt.domain_xml(&domain_name(&id), true).await.expect("xml");
    assert!(
        xml.contains("<source bridge='kbr0000000000000'/>") || xml.contains("<source bridge=\"kbr0000000000000\"/>"),
        "{xml}"
    );
    assert!(xml.contains("02:00:00:00:00:0b") && xml.contains("ktap00000000000"), "{xml}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_drive_is_written_and_attached() {
    let mut h = Harness::new();
    let status = crate::networking::NetworkStatus::default();
    h.converger = h.converger.with_networks(status.clone());
    let net = lan();
    status.set([(net.id.clone(), Ok((net.clone(), "kbr0000000000000".to_owned())))].into());
    let image = h.fetcher.kernel_image(8);
    let id = instance_id(8);
    let mut want = with_port(desired(&id, 1, DesiredPower::Running, &image), &net);
    want.metadata.config_drive = true;
    want.spec.user_data = Some("#!/bin/sh\necho hi\n".into());
    h.converger.apply(&want).await.expect("run");
    let iso = h.disks.instance_dir(&id).join(CONFIG_DRIVE_FILE);
    let bytes = std::fs::read(&iso).expect("iso written");
    assert!(bytes.windows(6).any(|w| w == b"cidata"), "volume id cidata");
    let xml = h.libvirt.domain_xml(&domain_name(&id), true).await.expect("xml");
    assert!(
        xml.contains("cidata.iso") && (xml.contains("device=\"cdrom\"") || xml.contains("device='cdrom'")),
        "{xml}"
    );
    // Deleting the instance removes the drive with its directory.
    h.converger.apply(&desired(&id, 2, DesiredPower::Deleted, &image)).await.expect("delete");
    assert!(!iso.exists());
}

/// Issue 12 item 14: a console log past its cap is cut to its tail (whole
/// lines), and QEMU's next write (it appends) lands at the new end.
#[tokio::test(flavor = "multi_thread")]
async fn console_logs_past_their_cap_keep_their_tail() {
    use std::io::Write as _;
    let h = Harness::new();
    let (big, small) = (instance_id(40), instance_id(41));
    for id in [&big, &small] {
        std::fs::create_dir_all(h.disks.instance_dir(id)).expect("dir");
    }
    let mut guest =
        std::fs::OpenOptions::new().create(true).append(true).open(h.converger.console_log(&big)).expect("log");
    let mut n = 0u64;
    while n <= CONSOLE_LOG_MAX {
        let line = format!("[ {n:10} ] boot message\n");
        guest.write_all(line.as_bytes()).expect("write");
        n += line.len() as u64;
    }
    std::fs::write(h.converger.console_log(&small), b"KUMO-READY\n").expect("log");
    let gone = instance_id(42);
    assert_eq!(h.converger.cap_console_logs([&big, &small, &gone]), 1);
    let text = std::fs::read_to_string(h.converger.console_log(&big)).expect("read");
    assert!(text.len() as u64 <= CONSOLE_LOG_KEEP, "{}", text.len());
    assert!(text.starts_with("[ "), "cut mid-line");
    assert!(text.ends_with(" boot message\n"));
    guest.write_all(b"KUMO-READY\n").expect("write");
    let text = std::fs::read(h.converger.console_log(&big)).expect("read");
    assert!(!text.contains(&0) && text.ends_with(b" boot message\nKUMO-READY\n"));
    assert_eq!(std::fs::read(h.converger.console_log(&small)).expect("read"), b"KUMO-READY\n");
}
