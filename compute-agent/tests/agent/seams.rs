//! The agent's side of issue 11's defects: host reboots (item 3) and the
//! storage sweep's quarantine (item 5), on libvirt's test driver.

use std::path::Path;
use std::time::Duration;

use kumo_agent::domain_xml::domain_uuid;
use kumo_wire::agent::{DesiredVolume, ObservedPower, QuarantineKind, SyncRequest};
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::DesiredPower;

use super::fake_controller::{desired, FakeController, JOIN_TOKEN};
use super::{id, power_of, RunningAgent};

/// A test-driver node holding a shut-off domain for `instance`: what a host
/// reboot leaves of a guest that ran.
fn node_with_shutoff_domain(dir: &Path, instance: &kumo_wire::InstanceId) -> String {
    let file = dir.join("node-after-boot.xml");
    std::fs::write(
        &file,
        format!(
            "<node>\n  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>\
             <cores>4</cores><threads>1</threads></cpu>\n  <memory>8388608</memory>\n\
             <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\
             <name>kumo-{instance}</name><uuid>{}</uuid><memory>131072</memory><vcpu>1</vcpu>\
             <os><type>hvm</type></os><test:runstate>5</test:runstate></domain>\n</node>\n",
            domain_uuid(instance)
        ),
    )
    .expect("node file");
    format!("test://{}", file.display())
}

fn rebooted(report: &SyncRequest) -> Vec<kumo_wire::InstanceId> {
    report.host_rebooted.as_ref().map(|r| r.instances.clone()).unwrap_or_default()
}

/// Issue 11, item 3: after a host reboot the domains are shut off and the
/// agent reported that as guests that powered themselves off. On a new boot
/// id it names them in `host_rebooted` until the controller asks for a new
/// generation, which starts them; the new boot id is recorded then.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_host_reboot_guests_stay_off() {
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = id(31);
    let uri = node_with_shutoff_domain(dir.path(), &a);
    let boot_id = dir.path().join("proc-boot-id");
    std::fs::write(&boot_id, "boot-2\n").expect("boot id");
    std::fs::write(dir.path().join("boot_id"), "boot-1\n").expect("previous boot");
    let image = fake.add_kernel_image(31);
    let mut d = desired(&a, 1, DesiredPower::Running, &image);
    d.applied_generation = 1; // It ran before the host went down.
    fake.edit(|list| list.push(d.clone()));

    let path = boot_id.clone();
    let agent = RunningAgent::start_with(&fake, dir.path(), &uri, JOIN_TOKEN, move |c| c.boot_id_path = path).await;
    let report = fake.wait_report("the reboot", |r| !rebooted(r).is_empty()).await;
    assert_eq!(rebooted(&report), vec![a.clone()]);
    assert_eq!(power_of(&report, &a), Some((ObservedPower::Shutoff, 1)));
    let booted_at = report.host_rebooted.as_ref().expect("reboot").booted_at;
    assert!(booted_at <= kumo_wire::Timestamp::now());
    assert_eq!(std::fs::read_to_string(dir.path().join("boot_id")).expect("record").trim(), "boot-1", "not yet");

    // The controller asks for it to be started again (a new generation).
    fake.edit(|list| list[0].generation = 2);
    fake.wait_report("running again", |r| power_of(r, &a) == Some((ObservedPower::Running, 2))).await;
    let n = fake.lock().reports.len();
    fake.wait_report("two more reports", |_| fake.lock().reports.len() > n + 1).await;
    assert!(fake.lock().reports[n..].iter().all(|r| r.host_rebooted.is_none()), "reported until acted on only");
    assert_eq!(std::fs::read_to_string(dir.path().join("boot_id")).expect("record").trim(), "boot-2");
    agent.stop().await;

    // Without a new boot id, a shut-off domain is what the guest did: no reboot is reported.
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = node_with_shutoff_domain(dir.path(), &a);
    std::fs::write(dir.path().join("boot_id"), "boot-2\n").expect("same boot");
    let image = fake.add_kernel_image(31);
    let mut d = desired(&a, 1, DesiredPower::Running, &image);
    d.applied_generation = 1;
    fake.edit(|list| list.push(d));
    let path = boot_id.clone();
    let agent = RunningAgent::start_with(&fake, dir.path(), &uri, JOIN_TOKEN, move |c| c.boot_id_path = path).await;
    fake.wait_report("powered off", |r| power_of(r, &a) == Some((ObservedPower::Shutoff, 1))).await;
    let n = fake.lock().reports.len();
    fake.wait_report("two more reports", |_| fake.lock().reports.len() > n + 1).await;
    assert!(fake.lock().reports.iter().all(|r| r.host_rebooted.is_none()));
    agent.stop().await;
}

/// Issue 11, item 5: the storage sweep deleted every local volume and
/// snapshot file the controller did not list. Now they move to the
/// quarantine (reported in every sync) and come back on request; only files
/// this agent created are deleted, after the grace period.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_deletes_tenant_data_it_does_not_recognise() {
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = kumo_agent::hypervisor::test_node_uri(dir.path()).expect("node");
    let agent = RunningAgent::start_with(&fake, dir.path(), &uri, JOIN_TOKEN, |c| {
        c.sweep_interval_secs = 1;
        c.quarantine_grace_secs = 3;
    })
    .await;
    let volume = |n: u32| DesiredVolume {
        id: format!("vol-{n:017x}").parse().expect("id"),
        backend: VolumeBackendKind::Local,
        generation: 1,
        applied_generation: 0,
        present: true,
        size_gib: 1,
        source: None,
        attach: None,
    };
    let (mine, kept, foreign) = (volume(41), volume(42), volume(43));
    fake.edit_volumes(|v| v.extend([mine.clone(), kept.clone()]));
    fake.wait_report("volumes created", |r| {
        r.observed_volumes.iter().filter(|o| o.applied_generation == 1).count() == 2
    })
    .await;
    let volumes_dir = dir.path().join("volumes");
    let mine_file = volumes_dir.join(format!("{}.qcow2", mine.id));
    let kept_file = volumes_dir.join(format!("{}.qcow2", kept.id));
    // A volume file this agent never made (copied in by an operator, another agent's, ...).
    let foreign_file = volumes_dir.join(format!("{}.qcow2", foreign.id));
    std::fs::copy(&kept_file, &foreign_file).expect("foreign file");
    let foreign_bytes = std::fs::read(&foreign_file).expect("read");

    // The controller forgets `mine` (as a database restored from a backup would).
    fake.edit_volumes(|v| v.retain(|x| x.id == kept.id));
    let report = fake
        .wait_report("quarantined", |r| {
            r.quarantine.iter().any(|q| q.resource_id == mine.id.as_str())
                && r.quarantine.iter().any(|q| q.resource_id == foreign.id.as_str())
        })
        .await;
    assert!(!mine_file.exists() && !foreign_file.exists(), "moved away");
    assert!(kept_file.exists(), "listed files stay");
    let q_mine = report.quarantine.iter().find(|q| q.resource_id == mine.id.as_str()).expect("mine").clone();
    let q_foreign = report.quarantine.iter().find(|q| q.resource_id == foreign.id.as_str()).expect("foreign").clone();
    assert_eq!((q_mine.kind, q_mine.created_here), (QuarantineKind::Volume, true));
    assert!(q_mine.delete_after.is_some() && q_mine.size_bytes > 0);
    assert_eq!((q_foreign.created_here, q_foreign.delete_after), (false, None));
    assert_eq!(q_foreign.size_bytes, foreign_bytes.len() as u64);
    let entry = dir.path().join("quarantine").join(&q_foreign.id);
    assert_eq!(std::fs::read(entry.join(format!("{}.qcow2", foreign.id))).expect("kept intact"), foreign_bytes);

    // After the grace period, the file this agent created is deleted; the other one never is.
    let n = fake.lock().reports.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let later = fake.lock().reports[n..].to_vec();
        if later
            .iter()
            .any(|r| !r.quarantine.is_empty() && r.quarantine.iter().all(|q| q.resource_id != mine.id.as_str()))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the agent's own quarantined file was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!entry.with_file_name(&q_mine.id).exists());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(std::fs::read(entry.join(format!("{}.qcow2", foreign.id))).expect("never deleted"), foreign_bytes);

    // The controller lists it again (its record was recovered) and an admin restores it: back in place, adopted.
    {
        let mut inner = fake.lock();
        inner.restore = vec![q_foreign.id.clone()];
        // Its recovered record: created and carried out long ago.
        inner.volumes.push(DesiredVolume { applied_generation: 1, ..foreign.clone() });
    }
    fake.edit_volumes(|_| {});
    fake.wait_report("restored and adopted", |r| {
        r.quarantine.is_empty()
            && r.observed_volumes.iter().any(|o| o.id == foreign.id && o.applied_generation == 1 && o.error.is_none())
    })
    .await;
    assert_eq!(std::fs::read(&foreign_file).expect("restored"), foreign_bytes);
    fake.lock().restore.clear();
    agent.stop().await;
}
