//! The libvirt domain XML of an instance, and the naming rules that let the
//! agent recognise its own domains after a restart: the domain is called
//! `kumo-<instance-id>`, its UUID is derived from the instance id, and its
//! `<metadata>` carries the instance id, project and generation under
//! [`METADATA_NS`].
//!
//! The guest's SMBIOS tables carry the EC2 platform signature that stock
//! cloud-init looks for: its boot-time detector (ds-identify) enables the Ec2
//! datasource only where the DMI product UUID and product serial both begin
//! with `ec2` and are equal (AWS's documented check); elsewhere it leaves a
//! stock image without any datasource unless its cloud.cfg is edited. Kumo's
//! metadata service answers as EC2's does (IMDSv1 and v2, dated versions), so
//! the UUID is made to begin with `ec2` and the serial repeats it. The
//! instance id is in the baseboard asset tag, where AWS's Nitro hosts put it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kumo_wire::{InstanceId, ProjectId, VolumeId};
use quick_xml::escape::escape as esc;
use sha2::{Digest, Sha256};

use crate::config::DomainType;

/// The XML namespace of the agent's domain metadata.
pub const METADATA_NS: &str = "urn:kumo:domain:1";
/// The prefix of every domain the agent creates.
pub const DOMAIN_PREFIX: &str = "kumo-";

/// How the guest boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot<'a> {
    /// From its root disk (disk images).
    Disk,
    /// Direct kernel boot (kernel+initrd images); the root disk is blank.
    Kernel {
        /// The cached kernel.
        kernel: &'a Path,
        /// The cached initrd.
        initrd: &'a Path,
    },
}

/// Everything that goes into an instance's domain XML.
#[derive(Debug, Clone, Copy)]
pub struct DomainSpec<'a> {
    /// `kvm` or `qemu`.
    pub domain_type: DomainType,
    /// The instance.
    pub instance: &'a InstanceId,
    /// The domain's UUID: [`domain_uuid`] for a new domain, the defined
    /// domain's own for a redefinition (libvirt refuses to change it).
    pub uuid: &'a str,
    /// Its project.
    pub project: &'a ProjectId,
    /// The desired-state generation the domain is defined for.
    pub generation: u64,
    /// The guest's hostname (the instance's name).
    pub hostname: &'a str,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The root disk (qcow2).
    pub root_disk: &'a Path,
    /// Where the serial console is written.
    pub console_log: &'a Path,
    /// Disk or kernel boot.
    pub boot: Boot<'a>,
    /// Volumes attached as further virtio disks.
    pub volumes: &'a [VolumeDisk],
    /// NICs, in guest order (the first is `eth0`).
    pub interfaces: &'a [Interface],
    /// A NoCloud `cidata` ISO, attached read-only as a cdrom on a
    /// virtio-scsi controller (see [`render`]).
    pub config_drive: Option<&'a Path>,
}

/// A NIC of a domain: a tap (created by libvirt) on a tenant bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The port's MAC, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// The network's bridge.
    pub bridge: String,
    /// The tap's name (derived from the port id, so the firewall can name it).
    pub tap: String,
}

/// A volume as a disk of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDisk {
    /// The volume (its id, without the dash, is the disk's serial: at most 20 characters fit).
    pub id: VolumeId,
    /// The qcow2 file.
    pub path: PathBuf,
    /// The device name, e.g. `vdb`.
    pub device: String,
}

/// The serial number a volume's disk shows the guest (`/sys/block/vdX/serial`).
pub fn volume_serial(id: &VolumeId) -> String {
    id.as_str().replace('-', "")
}

/// The `<disk>` element of a volume (for `render` and for hot-plugging).
pub fn volume_disk_xml(disk: &VolumeDisk) -> String {
    format!(
        "<disk type='file' device='disk'>\n  <driver name='qemu' type='qcow2'/>\n  <source file='{}'/>\n  \
         <target dev='{}' bus='virtio'/>\n  <serial>{}</serial>\n</disk>\n",
        path(&disk.path),
        esc(&disk.device),
        esc(&volume_serial(&disk.id))
    )
}

/// A `<disk>` of a domain's XML: its target device and source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEntry {
    /// e.g. `vdb`.
    pub target: String,
    /// The file, for file-backed disks.
    pub source: Option<PathBuf>,
}

/// The disks of a domain XML as libvirt prints it, in order: each
/// `<devices>/<disk>` with a `<target dev>`, and its `<source file>` if it has one.
/// A device XML (a lone `<disk>`, as given to attach and detach) is its one disk.
pub fn disks_of(xml: &str) -> Result<Vec<DiskEntry>, roxmltree::Error> {
    let doc = roxmltree::Document::parse(xml)?;
    let disks = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("disk")
                && (n.parent_element().is_some_and(|p| p.has_tag_name("devices")) || *n == doc.root_element())
        })
        .filter_map(|disk| {
            let child = |name: &str| disk.children().find(|c| c.has_tag_name(name));
            let target = child("target")?.attribute("dev")?.to_owned();
            let source = child("source").and_then(|s| s.attribute("file")).map(PathBuf::from);
            Some(DiskEntry { target, source })
        })
        .collect();
    Ok(disks)
}

/// The domain name of an instance.
pub fn domain_name(instance: &InstanceId) -> String {
    format!("{DOMAIN_PREFIX}{instance}")
}

/// The instance a domain name belongs to, if it is one of ours.
pub fn instance_of(domain_name: &str) -> Option<InstanceId> {
    domain_name.strip_prefix(DOMAIN_PREFIX)?.parse().ok()
}

/// The instance id in the agent's metadata element, as libvirt returns it
/// (the `id` attribute of its root element).
pub fn instance_of_metadata(metadata_xml: &str) -> Option<InstanceId> {
    roxmltree::Document::parse(metadata_xml).ok()?.root_element().attribute("id")?.parse().ok()
}

/// A stable, name-based UUID for an instance's domain, so a redefinition
/// always matches the existing domain. It begins with `ec2` (see the module
/// documentation); the remaining 113 bits come from the instance id.
pub fn domain_uuid(instance: &InstanceId) -> String {
    let digest = Sha256::digest(format!("kumo-domain:{instance}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[0] = 0xec;
    b[1] = 0x20 | (b[1] & 0x0f);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 (name-based)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A path as XML text (content or attribute value).
fn path(p: &Path) -> String {
    esc(p.to_string_lossy()).into_owned()
}

/// The hostname as it can stand in a kernel command line (no spaces or quotes).
fn cmdline_hostname(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' }).collect();
    if cleaned.is_empty() {
        "instance".to_owned()
    } else {
        cleaned
    }
}

/// Renders the full domain XML.
pub fn render(spec: &DomainSpec<'_>) -> String {
    let id = spec.instance.as_str();
    let mut x = String::with_capacity(2048);
    // Writing to a String cannot fail.
    let _ = writeln!(x, "<domain type='{}'>", spec.domain_type.as_str());
    let _ = writeln!(x, "  <name>{}</name>", esc(&domain_name(spec.instance)));
    let _ = writeln!(x, "  <uuid>{}</uuid>", esc(spec.uuid));
    let _ = writeln!(x, "  <metadata>");
    let _ = writeln!(
        x,
        "    <kumo:instance xmlns:kumo='{METADATA_NS}' id='{}' project='{}' generation='{}'/>",
        esc(id),
        esc(spec.project.as_str()),
        spec.generation
    );
    let _ = writeln!(x, "  </metadata>");
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", spec.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", spec.vcpus);
    let _ = writeln!(x, "  <sysinfo type='smbios'>");
    let _ = writeln!(x, "    <system>");
    let _ = writeln!(x, "      <entry name='manufacturer'>Kumo</entry>");
    let _ = writeln!(x, "      <entry name='product'>Kumo Compute</entry>");
    let _ = writeln!(x, "      <entry name='serial'>{}</entry>", esc(spec.uuid));
    let _ = writeln!(x, "    </system>");
    let _ = writeln!(x, "    <baseBoard>");
    let _ = writeln!(x, "      <entry name='asset'>{}</entry>", esc(id));
    let _ = writeln!(x, "    </baseBoard>");
    let _ = writeln!(x, "  </sysinfo>");
    let _ = writeln!(x, "  <os>");
    let _ = writeln!(x, "    <type arch='x86_64' machine='pc'>hvm</type>");
    match spec.boot {
        Boot::Disk => {
            let _ = writeln!(x, "    <boot dev='hd'/>");
        }
        Boot::Kernel { kernel, initrd } => {
            let _ = writeln!(x, "    <kernel>{}</kernel>", path(kernel));
            let _ = writeln!(x, "    <initrd>{}</initrd>", path(initrd));
            let cmdline =
                format!("console=ttyS0 kumo.instance_id={id} kumo.hostname={}", cmdline_hostname(spec.hostname));
            let _ = writeln!(x, "    <cmdline>{}</cmdline>", esc(&cmdline));
        }
    }
    let _ = writeln!(x, "    <smbios mode='sysinfo'/>");
    let _ = writeln!(x, "  </os>");
    let _ = writeln!(x, "  <features>");
    let _ = writeln!(x, "    <acpi/>");
    let _ = writeln!(x, "  </features>");
    let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(x, "  <devices>");
    let _ = writeln!(x, "    <disk type='file' device='disk'>");
    let _ = writeln!(x, "      <driver name='qemu' type='qcow2'/>");
    let _ = writeln!(x, "      <source file='{}'/>", path(spec.root_disk));
    let _ = writeln!(x, "      <target dev='vda' bus='virtio'/>");
    let _ = writeln!(x, "    </disk>");
    for volume in spec.volumes {
        for line in volume_disk_xml(volume).lines() {
            let _ = writeln!(x, "    {line}");
        }
    }
    // The config drive is a cdrom on virtio-scsi: the guest sees `/dev/sr0`,
    // never a `vdX` name that volumes use, and Debian's cloud kernel
    // (linux-image-cloud-amd64) drives it (virtio_scsi, sr_mod, isofs), whereas
    // it has no AHCI driver for a SATA cdrom.
    if let Some(iso) = spec.config_drive {
        let _ = writeln!(x, "    <controller type='scsi' index='0' model='virtio-scsi'/>");
        let _ = writeln!(x, "    <disk type='file' device='cdrom'>");
        let _ = writeln!(x, "      <driver name='qemu' type='raw'/>");
        let _ = writeln!(x, "      <source file='{}'/>", path(iso));
        let _ = writeln!(x, "      <target dev='sda' bus='scsi'/>");
        let _ = writeln!(x, "      <readonly/>");
        let _ = writeln!(x, "    </disk>");
    }
    for nic in spec.interfaces {
        let _ = writeln!(x, "    <interface type='bridge'>");
        let _ = writeln!(x, "      <mac address='{}'/>", esc(&nic.mac));
        let _ = writeln!(x, "      <source bridge='{}'/>", esc(&nic.bridge));
        let _ = writeln!(x, "      <target dev='{}'/>", esc(&nic.tap));
        let _ = writeln!(x, "      <model type='virtio'/>");
        let _ = writeln!(x, "    </interface>");
    }
    let log = path(spec.console_log);
    let _ = writeln!(x, "    <serial type='file'>");
    let _ = writeln!(x, "      <source path='{log}' append='on'/>");
    let _ = writeln!(x, "      <target port='0'/>");
    let _ = writeln!(x, "    </serial>");
    let _ = writeln!(x, "    <console type='file'>");
    let _ = writeln!(x, "      <source path='{log}' append='on'/>");
    let _ = writeln!(x, "      <target type='serial' port='0'/>");
    let _ = writeln!(x, "    </console>");
    let _ = writeln!(x, "    <memballoon model='none'/>");
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn ids() -> (InstanceId, ProjectId) {
        ("i-0123456789abcdef0".parse().expect("id"), "prj-00000000000000001".parse().expect("id"))
    }

    /// Issue 11: stock cloud-init's ds-identify finds the Ec2 datasource only
    /// where DMI's product UUID and product serial both begin with `ec2` and
    /// are equal (ignoring case); the instance id stays readable in the
    /// baseboard asset tag (the tiny guest falls back to it).
    #[test]
    fn the_guest_carries_the_ec2_platform_signature_cloud_init_looks_for() {
        for n in 0..200u64 {
            let instance: InstanceId = format!("i-{n:017x}").parse().expect("id");
            let uuid = domain_uuid(&instance);
            assert!(uuid.starts_with("ec2"), "{uuid}");
            let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
            assert!(uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{uuid}");
            assert_eq!(uuid, domain_uuid(&instance), "stable");
        }
        let (instance, project) = ids();
        let uuid = domain_uuid(&instance);
        let spec = DomainSpec {
            domain_type: DomainType::Qemu,
            instance: &instance,
            uuid: &uuid,
            project: &project,
            generation: 1,
            hostname: "h",
            vcpus: 1,
            memory_mib: 128,
            root_disk: Path::new("/d"),
            console_log: Path::new("/c"),
            boot: Boot::Disk,
            volumes: &[],
            interfaces: &[],
            config_drive: None,
        };
        let xml = render(&spec);
        let doc = roxmltree::Document::parse(&xml).expect("xml");
        let entry = |section: &str, name: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name(section))
                .and_then(|s| s.children().find(|e| e.attribute("name") == Some(name)))
                .and_then(|e| e.text())
                .map(str::to_owned)
        };
        let product_uuid = doc.descendants().find(|n| n.has_tag_name("uuid")).and_then(|n| n.text()).expect("uuid");
        let serial = entry("system", "serial").expect("serial");
        assert!(product_uuid.to_ascii_lowercase().starts_with("ec2"));
        assert!(product_uuid.eq_ignore_ascii_case(&serial), "{product_uuid} vs {serial}");
        assert_eq!(entry("baseBoard", "asset").as_deref(), Some(instance.as_str()));
        // A redefinition keeps the UUID the domain was defined with.
        let old = "c418bfe3-38af-5d8b-9728-9c5337e5acc6";
        let xml = render(&DomainSpec { uuid: old, generation: 2, ..spec });
        assert!(xml.contains(&format!("<uuid>{old}</uuid>")), "{xml}");
    }

    #[test]
    fn kernel_boot_domain_xml() {
        let (instance, project) = ids();
        let spec = DomainSpec {
            domain_type: DomainType::Qemu,
            instance: &instance,
            uuid: &domain_uuid(&instance),
            project: &project,
            generation: 3,
            hostname: "web 1<&>",
            vcpus: 2,
            memory_mib: 512,
            root_disk: Path::new("/var/lib/kumo/agent/instances/i-0123456789abcdef0/disk.qcow2"),
            console_log: Path::new("/var/lib/kumo/agent/instances/i-0123456789abcdef0/console.log"),
            boot: Boot::Kernel {
                kernel: Path::new("/var/lib/kumo/agent/images/ami-00000000000000002/kernel"),
                initrd: Path::new("/var/lib/kumo/agent/images/ami-00000000000000002/initrd"),
            },
            volumes: &[],
            interfaces: &[],
            config_drive: None,
        };
        expect![[r#"
            <domain type='qemu'>
              <name>kumo-i-0123456789abcdef0</name>
              <uuid>ec28bfe3-38af-5d8b-9728-9c5337e5acc6</uuid>
              <metadata>
                <kumo:instance xmlns:kumo='urn:kumo:domain:1' id='i-0123456789abcdef0' project='prj-00000000000000001' generation='3'/>
              </metadata>
              <memory unit='MiB'>512</memory>
              <vcpu>2</vcpu>
              <sysinfo type='smbios'>
                <system>
                  <entry name='manufacturer'>Kumo</entry>
                  <entry name='product'>Kumo Compute</entry>
                  <entry name='serial'>ec28bfe3-38af-5d8b-9728-9c5337e5acc6</entry>
                </system>
                <baseBoard>
                  <entry name='asset'>i-0123456789abcdef0</entry>
                </baseBoard>
              </sysinfo>
              <os>
                <type arch='x86_64' machine='pc'>hvm</type>
                <kernel>/var/lib/kumo/agent/images/ami-00000000000000002/kernel</kernel>
                <initrd>/var/lib/kumo/agent/images/ami-00000000000000002/initrd</initrd>
                <cmdline>console=ttyS0 kumo.instance_id=i-0123456789abcdef0 kumo.hostname=web-1---</cmdline>
                <smbios mode='sysinfo'/>
              </os>
              <features>
                <acpi/>
              </features>
              <on_poweroff>destroy</on_poweroff>
              <on_reboot>restart</on_reboot>
              <on_crash>destroy</on_crash>
              <devices>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='/var/lib/kumo/agent/instances/i-0123456789abcdef0/disk.qcow2'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <serial type='file'>
                  <source path='/var/lib/kumo/agent/instances/i-0123456789abcdef0/console.log' append='on'/>
                  <target port='0'/>
                </serial>
                <console type='file'>
                  <source path='/var/lib/kumo/agent/instances/i-0123456789abcdef0/console.log' append='on'/>
                  <target type='serial' port='0'/>
                </console>
                <memballoon model='none'/>
              </devices>
            </domain>
        "#]]
        .assert_eq(&render(&spec));
    }

    #[test]
    fn disk_boot_has_no_kernel_and_paths_are_escaped() {
        let (instance, project) = ids();
        let spec = DomainSpec {
            domain_type: DomainType::Kvm,
            instance: &instance,
            uuid: &domain_uuid(&instance),
            project: &project,
            generation: 1,
            hostname: "db",
            vcpus: 1,
            memory_mib: 256,
            root_disk: Path::new("/srv/o'brien&co/disk.qcow2"),
            console_log: Path::new("/srv/<x>/console.log"),
            boot: Boot::Disk,
            volumes: &[],
            interfaces: &[],
            config_drive: None,
        };
        let xml = render(&spec);
        assert!(xml.starts_with("<domain type='kvm'>\n"));
        assert!(!xml.contains("<kernel>") && !xml.contains("<cmdline>"));
        assert!(xml.contains("    <boot dev='hd'/>\n"));
        assert!(xml.contains("<source file='/srv/o&apos;brien&amp;co/disk.qcow2'/>"));
        assert!(xml.contains("<source path='/srv/&lt;x&gt;/console.log' append='on'/>"));
    }

    #[test]
    fn nics_in_port_order_and_the_config_drive_as_a_readonly_cdrom() {
        let (instance, project) = ids();
        let interfaces = [
            Interface {
                mac: "02:00:00:00:00:01".into(),
                bridge: "kbr0123456789ab".into(),
                tap: "ktap00000000001".into(),
            },
            Interface {
                mac: "02:00:00:00:00:02".into(),
                bridge: "kbr00000000000c".into(),
                tap: "ktap00000000002".into(),
            },
        ];
        let spec = DomainSpec {
            domain_type: DomainType::Qemu,
            instance: &instance,
            uuid: &domain_uuid(&instance),
            project: &project,
            generation: 1,
            hostname: "web",
            vcpus: 1,
            memory_mib: 256,
            root_disk: Path::new("/d/disk.qcow2"),
            console_log: Path::new("/d/console.log"),
            boot: Boot::Disk,
            volumes: &[],
            interfaces: &interfaces,
            config_drive: Some(Path::new("/d/cidata.iso")),
        };
        let xml = render(&spec);
        let devices = &xml
            [xml.find("    <controller type='scsi'").expect("controller")..xml.find("    <serial").expect("serial")];
        // expect-test strips the common indentation of the snapshot.
        let devices: String = devices.lines().map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l))).collect();
        expect![[r#"
                <controller type='scsi' index='0' model='virtio-scsi'/>
                <disk type='file' device='cdrom'>
                  <driver name='qemu' type='raw'/>
                  <source file='/d/cidata.iso'/>
                  <target dev='sda' bus='scsi'/>
                  <readonly/>
                </disk>
                <interface type='bridge'>
                  <mac address='02:00:00:00:00:01'/>
                  <source bridge='kbr0123456789ab'/>
                  <target dev='ktap00000000001'/>
                  <model type='virtio'/>
                </interface>
                <interface type='bridge'>
                  <mac address='02:00:00:00:00:02'/>
                  <source bridge='kbr00000000000c'/>
                  <target dev='ktap00000000002'/>
                  <model type='virtio'/>
                </interface>
        "#]]
        .assert_eq(&devices);
        // The cdrom is no virtio disk: volumes keep vdb, vdc, ...
        let disks = disks_of(&xml).expect("well-formed");
        assert_eq!(disks.iter().map(|d| d.target.as_str()).collect::<Vec<_>>(), ["vda", "sda"]);
    }

    /// Issue 11, item 2: the config drive was a SATA cdrom, and Debian's cloud
    /// kernel (`linux-image-cloud-amd64`: no `CONFIG_SATA_AHCI`) never saw it.
    /// It has `virtio_scsi`, `sr_mod` and `isofs` (and `ata_piix` for IDE).
    #[test]
    fn stock_cloud_images_see_the_config_drive() {
        let (instance, project) = ids();
        let spec = DomainSpec {
            domain_type: DomainType::Kvm,
            instance: &instance,
            uuid: &domain_uuid(&instance),
            project: &project,
            generation: 1,
            hostname: "web",
            vcpus: 1,
            memory_mib: 256,
            root_disk: Path::new("/d/disk.qcow2"),
            console_log: Path::new("/d/console.log"),
            boot: Boot::Disk,
            volumes: &[],
            interfaces: &[],
            config_drive: Some(Path::new("/d/cidata.iso")),
        };
        let xml = render(&spec);
        let doc = roxmltree::Document::parse(&xml).expect("well-formed");
        let cdrom = doc.descendants().find(|n| n.attribute("device") == Some("cdrom")).expect("a cdrom");
        let target = cdrom.children().find(|n| n.has_tag_name("target")).expect("target");
        let bus = target.attribute("bus").expect("bus").to_owned();
        // Buses whose drivers Debian's cloud kernel ships (and never a vdX name).
        let controller_ok = match bus.as_str() {
            "scsi" => xml.contains("<controller type='scsi' index='0' model='virtio-scsi'/>"),
            "ide" => true, // ata_piix on the i440fx machine
            _ => false,
        };
        assert!(controller_ok, "the cdrom's bus {bus:?} needs a driver the cloud kernel lacks: {xml}");
        // Without a config drive there is no controller to probe.
        let plain = render(&DomainSpec { config_drive: None, ..spec });
        assert!(!plain.contains("<controller"), "{plain}");
    }

    #[test]
    fn names_uuids_and_metadata_map_back_to_the_instance() {
        let (instance, _) = ids();
        assert_eq!(domain_name(&instance), "kumo-i-0123456789abcdef0");
        assert_eq!(instance_of("kumo-i-0123456789abcdef0"), Some(instance.clone()));
        assert_eq!(instance_of("kumo-nope"), None);
        assert_eq!(instance_of("i-0123456789abcdef0"), None);
        let uuid = domain_uuid(&instance);
        assert_eq!(uuid, domain_uuid(&instance));
        assert_eq!((uuid.len(), &uuid[14..15]), (36, "5"));
        let meta =
            "<instance xmlns=\"urn:kumo:domain:1\" id=\"i-0123456789abcdef0\" project=\"prj-x\" generation=\"3\"/>";
        assert_eq!(instance_of_metadata(meta), Some(instance.clone()));
        assert_eq!(instance_of_metadata(&meta.replace('"', "'")), Some(instance));
        assert_eq!(instance_of_metadata("<instance/>"), None);
    }

    #[test]
    fn volumes_are_virtio_disks_with_their_id_as_serial_and_can_be_read_back() {
        let (instance, project) = ids();
        let volumes = [VolumeDisk {
            id: "vol-0000000000000000b".parse().expect("id"),
            path: PathBuf::from("/srv/nfs/volumes/vol-0000000000000000b.qcow2"),
            device: "vdb".into(),
        }];
        let spec = DomainSpec {
            domain_type: DomainType::Qemu,
            instance: &instance,
            uuid: &domain_uuid(&instance),
            project: &project,
            generation: 1,
            hostname: "db",
            vcpus: 1,
            memory_mib: 256,
            root_disk: Path::new("/var/lib/kumo/agent/instances/i-0123456789abcdef0/disk.qcow2"),
            console_log: Path::new("/c.log"),
            boot: Boot::Disk,
            volumes: &volumes,
            interfaces: &[],
            config_drive: None,
        };
        let xml = render(&spec);
        expect![[r#"
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/srv/nfs/volumes/vol-0000000000000000b.qcow2'/>
              <target dev='vdb' bus='virtio'/>
              <serial>vol0000000000000000b</serial>
            </disk>
        "#]]
        .assert_eq(&volume_disk_xml(&volumes[0]));
        assert_eq!(volume_serial(&volumes[0].id).len(), 20, "virtio-blk serials hold 20 bytes");
        assert_eq!(
            disks_of(&xml).expect("well-formed"),
            vec![
                DiskEntry {
                    target: "vda".into(),
                    source: Some(PathBuf::from("/var/lib/kumo/agent/instances/i-0123456789abcdef0/disk.qcow2")),
                },
                DiskEntry { target: "vdb".into(), source: Some(volumes[0].path.clone()) },
            ]
        );
        // As libvirt prints a live domain: double quotes and extra attributes.
        let live = "<domain><devices><disk type=\"file\" device=\"disk\">\n<driver name=\"qemu\" type=\"qcow2\"/>\n\
            <source file=\"/a&amp;b.qcow2\" index=\"2\"/>\n<backingStore/>\n<target dev=\"vdc\" bus=\"virtio\"/>\n</disk>\
            <disk type=\"network\"><target dev=\"vdd\"/></disk></devices></domain>";
        assert_eq!(
            disks_of(live).expect("well-formed"),
            vec![
                DiskEntry { target: "vdc".into(), source: Some(PathBuf::from("/a&b.qcow2")) },
                DiskEntry { target: "vdd".into(), source: None },
            ]
        );
        // A disk outside `<devices>` is none of the domain's; broken XML is an error, not "no disks".
        assert_eq!(
            disks_of("<domainbackup><disks><disk name='vda'><target dev='x'/></disk></disks></domainbackup>"),
            Ok(vec![])
        );
        assert!(disks_of("<domain><devices><disk type='file'><target dev='vda'/>").is_err());
    }
}
