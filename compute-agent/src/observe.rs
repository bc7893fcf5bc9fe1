//! What the agent reports and what it cleans up: the observed state of every
//! instance the controller listed, the domains the controller does not know
//! (reported, never destroyed), and leaked instance directories (removed).

use std::collections::HashSet;

use kumo_storage::{DiskError, InstanceDisks};
use kumo_wire::agent::{DesiredInstance, ObservedInstance, ObservedPower};
use kumo_wire::{DesiredPower, InstanceId, Timestamp};

use crate::hypervisor::DomainInfo;
use crate::ledger::Ledger;

/// The observed state of each desired instance, and the names of the domains
/// that belong to no desired instance (foreign domains included), sorted.
pub fn observe(
    desired: &[DesiredInstance],
    domains: &[DomainInfo],
    ledger: &Ledger<DesiredInstance>,
    now: Timestamp,
) -> (Vec<ObservedInstance>, Vec<String>) {
    let observed = desired
        .iter()
        .map(|d| {
            let mut power = domains
                .iter()
                .find(|dom| dom.instance.as_ref() == Some(&d.id))
                .map_or(ObservedPower::Absent, |dom| dom.power);
            // While a vanished domain is being rebuilt (the generation is already
            // applied), it is defined before it starts; "shut off" in between would
            // read as a guest that powered itself off.
            let healing = ledger.is_busy(&d.id) && ledger.applied(d) >= d.generation;
            if healing && d.power == DesiredPower::Running && power != ObservedPower::Running {
                power = ObservedPower::Absent;
            }
            let error = ledger.error(d);
            ObservedInstance {
                id: d.id.clone(),
                power,
                applied_generation: ledger.applied(d),
                error: error.map(|(message, _)| message.to_owned()),
                failed_generation: error.map(|(_, generation)| generation),
                observed_at: now,
            }
        })
        .collect();
    let wanted: HashSet<&InstanceId> = desired.iter().map(|d| &d.id).collect();
    let mut unmanaged: Vec<String> = domains
        .iter()
        .filter(|dom| dom.instance.as_ref().is_none_or(|id| !wanted.contains(id)))
        .map(|dom| dom.name.clone())
        .collect();
    unmanaged.sort();
    (observed, unmanaged)
}

/// Removes the directories (disk, console log) of instances that have neither
/// a domain nor a place in the desired state nor a running task: what a
/// partial failure left behind. Returns the instances cleaned up.
pub async fn sweep_leaks(
    disks: &dyn InstanceDisks,
    desired: &[DesiredInstance],
    domains: &[DomainInfo],
    ledger: &Ledger<DesiredInstance>,
) -> Result<Vec<InstanceId>, DiskError> {
    let wanted: HashSet<&InstanceId> = desired.iter().map(|d| &d.id).collect();
    let with_domain: HashSet<&InstanceId> = domains.iter().filter_map(|d| d.instance.as_ref()).collect();
    let mut removed = Vec::new();
    for id in disks.list().await? {
        if wanted.contains(&id) || with_domain.contains(&id) || ledger.is_busy(&id) {
            continue;
        }
        if disks.remove(&id).await? {
            tracing::warn!(instance = %id, dir = %disks.instance_dir(&id).display(),
                "removed the leftover files of an instance that has no domain and is not wanted");
            removed.push(id);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{desired, instance_id, MemFetcher};
    use kumo_storage::QemuImgDisks;
    use std::time::Instant;

    fn domain(name: &str, instance: Option<InstanceId>, power: ObservedPower) -> DomainInfo {
        DomainInfo { name: name.into(), uuid: String::new(), power, instance }
    }

    #[test]
    fn reports_power_applied_generation_errors_and_unmanaged_domains() {
        let image = MemFetcher::default().kernel_image(1);
        let (a, b, c) = (instance_id(1), instance_id(2), instance_id(3));
        let mut da = desired(&a, 4, DesiredPower::Running, &image);
        da.applied_generation = 3;
        let db = desired(&b, 2, DesiredPower::Running, &image);
        let domains = vec![
            domain("kumo-a", Some(a.clone()), ObservedPower::Running),
            domain(&format!("kumo-{c}"), Some(c.clone()), ObservedPower::Shutoff),
            domain("legacy-vm", None, ObservedPower::Running),
        ];
        let mut ledger = Ledger::default();
        ledger.start(&b);
        ledger.finish(&b, 2, Err("libvirt start of kumo-b failed: no space".into()), Instant::now());
        let now = Timestamp(1_000);
        let (observed, unmanaged) = observe(&[da, db], &domains, &ledger, now);
        assert_eq!(
            observed[0],
            ObservedInstance {
                id: a,
                power: ObservedPower::Running,
                applied_generation: 3,
                error: None,
                failed_generation: None,
                observed_at: now,
            }
        );
        assert_eq!(observed[1].power, ObservedPower::Absent);
        assert_eq!(observed[1].error.as_deref(), Some("libvirt start of kumo-b failed: no space"));
        assert_eq!(observed[1].failed_generation, Some(2));
        assert_eq!(unmanaged, vec![format!("kumo-{c}"), "legacy-vm".to_owned()]);
    }

    #[test]
    fn a_domain_being_rebuilt_is_not_reported_as_powered_off() {
        let image = MemFetcher::default().kernel_image(1);
        let a = instance_id(1);
        let mut d = desired(&a, 2, DesiredPower::Running, &image);
        d.applied_generation = 2;
        let domains = [domain("kumo-a", Some(a.clone()), ObservedPower::Shutoff)];
        let mut ledger = Ledger::default();
        let now = Timestamp(0);
        assert_eq!(observe(std::slice::from_ref(&d), &domains, &ledger, now).0[0].power, ObservedPower::Shutoff);
        ledger.start(&a);
        assert_eq!(observe(std::slice::from_ref(&d), &domains, &ledger, now).0[0].power, ObservedPower::Absent);
        d.generation = 3; // A real change in flight is reported as it is (its generation is not applied yet).
        assert_eq!(observe(&[d], &domains, &ledger, now).0[0].power, ObservedPower::Shutoff);
    }

    #[tokio::test]
    async fn sweeps_only_directories_nobody_owns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disks = QemuImgDisks::new(dir.path());
        let image = MemFetcher::default().kernel_image(1);
        let ids: Vec<InstanceId> = (1..=4).map(instance_id).collect();
        for id in &ids {
            std::fs::create_dir_all(disks.instance_dir(id)).expect("mkdir");
            std::fs::write(disks.instance_dir(id).join("console.log"), b"x").expect("log");
        }
        let wanted = [desired(&ids[0], 1, DesiredPower::Running, &image)];
        let domains = [domain("kumo-x", Some(ids[1].clone()), ObservedPower::Shutoff)];
        let mut ledger = Ledger::default();
        ledger.start(&ids[2]);
        let removed = sweep_leaks(&disks, &wanted, &domains, &ledger).await.expect("sweep");
        assert_eq!(removed, vec![ids[3].clone()]);
        assert_eq!(disks.list().await.expect("list"), ids[..3].to_vec());
    }
}
