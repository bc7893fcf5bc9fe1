//! Reading one running domain's counters through libvirt: `virDomainGetInfo`
//! (CPU time, memory), the balloon's memory statistics, and per device
//! `virDomainBlockStats` / `virDomainInterfaceStats` for the disks and NICs
//! its live XML names. (The bulk `virConnectGetAllDomainStats` would be one
//! call for all domains, but the `virt` crate does not decode its records
//! and this crate forbids `unsafe`.)

use kumo_wire::stats::{DiskCounters, InstanceSample, NicCounters};
use kumo_wire::InstanceId;
use virt::domain::Domain;

/// The balloon statistic tags libvirt uses (`virDomainMemoryStatTags`).
const MEMORY_STAT_UNUSED: u32 = virt::sys::VIR_DOMAIN_MEMORY_STAT_UNUSED;
const MEMORY_STAT_AVAILABLE: u32 = virt::sys::VIR_DOMAIN_MEMORY_STAT_AVAILABLE;

/// Counters of `domain`, which belongs to `instance`. A device whose
/// counters cannot be read (unplugged between the XML and the call) is left
/// out; the domain itself failing is an error.
pub(super) fn sample_domain(domain: &Domain, instance: InstanceId) -> Result<InstanceSample, virt::error::Error> {
    let info = domain.info()?;
    let xml = domain.xml_desc(0)?;
    let (disk_targets, nic_targets) = device_targets(&xml);
    let memory_used_kib = domain.memory_stats(0).ok().and_then(|stats| {
        let tag = |t: u32| stats.iter().find(|s| s.tag == t).map(|s| s.val);
        Some(tag(MEMORY_STAT_AVAILABLE)?.saturating_sub(tag(MEMORY_STAT_UNUSED)?))
    });
    let counter = |v: i64| u64::try_from(v).unwrap_or(0);
    let disks = disk_targets
        .into_iter()
        .filter_map(|device| {
            let s = domain.block_stats(&device).ok()?;
            Some(DiskCounters {
                device,
                read_bytes: counter(s.rd_bytes),
                write_bytes: counter(s.wr_bytes),
                read_ops: counter(s.rd_req),
                write_ops: counter(s.wr_req),
            })
        })
        .collect();
    let nics = nic_targets
        .into_iter()
        .filter_map(|device| {
            let s = domain.interface_stats(&device).ok()?;
            // libvirt reports a tap from the host's side: what the host's end
            // receives is what the guest sent.
            Some(NicCounters {
                device,
                rx_bytes: counter(s.tx_bytes),
                tx_bytes: counter(s.rx_bytes),
                rx_packets: counter(s.tx_packets),
                tx_packets: counter(s.rx_packets),
            })
        })
        .collect();
    Ok(InstanceSample {
        id: instance,
        vcpus: info.nr_virt_cpu.max(1),
        cpu_time_ns: info.cpu_time,
        memory_kib: info.memory,
        memory_used_kib,
        disks,
        nics,
    })
}

/// The `<target dev>` of every disk and of every interface in a live domain XML.
fn device_targets(xml: &str) -> (Vec<String>, Vec<String>) {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return (Vec::new(), Vec::new());
    };
    let targets = |tag: &str| -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name(tag) && n.parent_element().is_some_and(|p| p.has_tag_name("devices")))
            .filter_map(|n| n.children().find(|c| c.has_tag_name("target"))?.attribute("dev").map(str::to_owned))
            .collect()
    };
    (targets("disk"), targets("interface"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_targets_are_read_from_the_devices_section() {
        let xml = "<domain><devices>\
            <disk type='file'><target dev='vda'/></disk><disk type='file'><target dev='sda'/></disk>\
            <interface type='bridge'><target dev='ktap1'/></interface><interface type='bridge'/>\
            </devices><metadata><disk><target dev='not-a-device'/></disk></metadata></domain>";
        assert_eq!(device_targets(xml), (vec!["vda".to_owned(), "sda".to_owned()], vec!["ktap1".to_owned()]));
        assert_eq!(device_targets("<not xml"), (vec![], vec![]));
    }
}
