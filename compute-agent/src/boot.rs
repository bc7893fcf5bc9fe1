//! Host reboots. Domains do not survive a host reboot running: they come back
//! shut off, which alone reads like guests that powered themselves off. The
//! agent keeps the host's boot id (`/proc/sys/kernel/random/boot_id`) in
//! `state_dir/boot_id`; when it starts on a different boot id, the first sync
//! that knows the desired state names every instance desired running (its
//! generation carried out) whose domain is shut off or gone, and keeps naming
//! those the controller has not acted on yet (their generation unchanged).
//! The controller records them `stopped` from the boot on and asks for them
//! to be started under a new generation. The new boot id is written only once
//! nothing is left to report, so an agent that dies halfway reports again.

use std::path::{Path, PathBuf};

use kumo_wire::agent::{DesiredInstance, HostReboot, ObservedPower};
use kumo_wire::{DesiredPower, InstanceId, Timestamp};

use crate::hypervisor::DomainInfo;
use crate::ledger::Ledger;

/// The file in `state_dir` that holds the boot id the agent last ran under.
pub const BOOT_ID_FILE: &str = "boot_id";

/// Where the reboot handling stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Same boot as last time (or no boot id to compare): nothing to do.
    Done,
    /// A new boot: waiting for the first desired state to see what the boot left off.
    Detecting,
    /// Reporting these instances (with the generation they were found at).
    Reporting(Vec<(InstanceId, u64)>),
}

/// Tells a host reboot from guests that powered off, once per boot.
#[derive(Debug)]
pub struct BootWatch {
    record: PathBuf,
    current: Option<String>,
    booted_at: Timestamp,
    phase: Phase,
}

/// The boot id in `path`, trimmed; `None` when it cannot be read.
fn read_id(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// When the host booted, from `/proc/uptime` (now, if it cannot be read).
fn boot_time() -> Timestamp {
    let now = Timestamp::now();
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|u| u.parse::<f64>().ok()));
    match uptime {
        // Whole milliseconds of a finite, non-negative uptime: the cast cannot overflow in practice.
        Some(secs) if secs.is_finite() && (0.0..1e12).contains(&secs) => {
            now.plus_millis(-((secs * 1000.0).round() as i64))
        }
        _ => now,
    }
}

impl BootWatch {
    /// Compares the boot id in `boot_id_path` with the one recorded in
    /// `state_dir`. A first run (nothing recorded) records it: no reboot.
    pub fn load(boot_id_path: &Path, state_dir: &Path) -> Self {
        let record = state_dir.join(BOOT_ID_FILE);
        let current = read_id(boot_id_path);
        let previous = read_id(&record);
        let phase = match (&previous, &current) {
            (Some(previous), Some(current)) if previous != current => {
                tracing::warn!(previous = %previous, current = %current,
                    "the host booted since the agent last ran: instances it leaves off will be started again");
                Phase::Detecting
            }
            _ => Phase::Done,
        };
        let watch = Self { record, current, booted_at: boot_time(), phase };
        if previous.is_none() {
            watch.persist();
        }
        watch
    }

    /// Whether a reboot is still being handled.
    pub fn pending(&self) -> bool {
        self.phase != Phase::Done
    }

    /// With the desired state known, picks the instances the boot left off:
    /// desired running, generation carried out, domain shut off or gone.
    pub fn detect(&mut self, desired: &[DesiredInstance], domains: &[DomainInfo], ledger: &Ledger<DesiredInstance>) {
        if self.phase != Phase::Detecting {
            return;
        }
        let off: Vec<(InstanceId, u64)> = desired
            .iter()
            .filter(|d| d.power == DesiredPower::Running && ledger.applied(d) >= d.generation)
            .filter(|d| {
                let power = domains.iter().find(|dom| dom.instance.as_ref() == Some(&d.id)).map(|dom| dom.power);
                matches!(power, None | Some(ObservedPower::Shutoff))
            })
            .map(|d| (d.id.clone(), d.generation))
            .collect();
        tracing::info!(instances = off.len(), "instances the host reboot left off");
        self.phase = Phase::Reporting(off);
        self.settle();
    }

    /// What to tell the controller in the next sync.
    pub fn report(&self) -> Option<HostReboot> {
        match &self.phase {
            Phase::Reporting(off) if !off.is_empty() => Some(HostReboot {
                booted_at: self.booted_at,
                instances: off.iter().map(|(id, _)| id.clone()).collect(),
            }),
            _ => None,
        }
    }

    /// After a sync: instances the controller acted on (a new generation, a
    /// different desired power, or gone) are no longer reported.
    pub fn accepted(&mut self, desired: &[DesiredInstance]) {
        if let Phase::Reporting(off) = &mut self.phase {
            off.retain(|(id, generation)| {
                desired.iter().any(|d| &d.id == id && d.generation == *generation && d.power == DesiredPower::Running)
            });
        }
        self.settle();
    }

    /// Records the boot id once nothing is left to report.
    fn settle(&mut self) {
        if matches!(&self.phase, Phase::Reporting(off) if off.is_empty()) {
            self.phase = Phase::Done;
            self.persist();
        }
    }

    fn persist(&self) {
        let Some(current) = &self.current else { return };
        let tmp = self.record.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("{current}\n")).and_then(|()| std::fs::rename(&tmp, &self.record));
        if let Err(err) = written {
            tracing::warn!(file = %self.record.display(), error = %err, "cannot record the host's boot id");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{desired, instance_id, MemFetcher};

    fn domain(id: &InstanceId, power: ObservedPower) -> DomainInfo {
        DomainInfo { name: format!("kumo-{id}"), uuid: String::new(), power, instance: Some(id.clone()) }
    }

    fn setup(previous: Option<&str>, current: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc_file = dir.path().join("proc-boot-id");
        std::fs::write(&proc_file, format!("{current}\n")).expect("boot id");
        if let Some(previous) = previous {
            std::fs::write(dir.path().join(BOOT_ID_FILE), previous).expect("record");
        }
        (dir, proc_file)
    }

    #[test]
    fn a_first_run_or_the_same_boot_is_no_reboot() {
        let (dir, proc_file) = setup(None, "boot-1");
        let watch = BootWatch::load(&proc_file, dir.path());
        assert!(!watch.pending());
        assert_eq!(read_id(&dir.path().join(BOOT_ID_FILE)).as_deref(), Some("boot-1"));
        let watch = BootWatch::load(&proc_file, dir.path());
        assert!(!watch.pending() && watch.report().is_none());
    }

    #[test]
    fn a_new_boot_reports_the_instances_it_left_off_until_the_controller_acts() {
        let (dir, proc_file) = setup(Some("boot-1"), "boot-2");
        let image = MemFetcher::default().kernel_image(1);
        let (off, gone, on, stopped, busy) =
            (instance_id(1), instance_id(2), instance_id(3), instance_id(4), instance_id(5));
        let mut list = vec![
            desired(&off, 2, DesiredPower::Running, &image),
            desired(&gone, 1, DesiredPower::Running, &image),
            desired(&on, 1, DesiredPower::Running, &image),
            desired(&stopped, 3, DesiredPower::Stopped, &image),
            desired(&busy, 4, DesiredPower::Running, &image),
        ];
        for d in &mut list[..4] {
            d.applied_generation = d.generation;
        }
        list[4].applied_generation = 3; // A change still in flight is carried out as usual.
        let domains = [
            domain(&off, ObservedPower::Shutoff),
            domain(&on, ObservedPower::Running),
            domain(&stopped, ObservedPower::Shutoff),
            domain(&busy, ObservedPower::Shutoff),
        ];
        let mut watch = BootWatch::load(&proc_file, dir.path());
        assert!(watch.pending() && watch.report().is_none(), "nothing is known before the first desired state");
        watch.detect(&list, &domains, &Ledger::default());
        let report = watch.report().expect("a reboot to report");
        assert_eq!(report.instances, vec![off.clone(), gone.clone()]);
        assert!(report.booted_at <= Timestamp::now());
        assert_eq!(read_id(&dir.path().join(BOOT_ID_FILE)).as_deref(), Some("boot-1"), "not recorded yet");

        // The controller answered for one of them (a new generation): the other is still reported.
        list[0].generation = 3;
        watch.accepted(&list);
        assert_eq!(watch.report().expect("still one").instances, vec![gone.clone()]);
        // An agent restarted now would report again.
        assert!(BootWatch::load(&proc_file, dir.path()).pending());
        list.remove(1);
        watch.accepted(&list);
        assert!(watch.report().is_none() && !watch.pending());
        assert_eq!(read_id(&dir.path().join(BOOT_ID_FILE)).as_deref(), Some("boot-2"));
        assert!(!BootWatch::load(&proc_file, dir.path()).pending(), "handled once per boot");
    }

    #[test]
    fn a_new_boot_with_nothing_left_off_is_recorded_at_once() {
        let (dir, proc_file) = setup(Some("boot-1"), "boot-2");
        let mut watch = BootWatch::load(&proc_file, dir.path());
        watch.detect(&[], &[], &Ledger::default());
        assert!(!watch.pending());
        assert_eq!(read_id(&dir.path().join(BOOT_ID_FILE)).as_deref(), Some("boot-2"));
    }
}
