//! Storage figures for the closing note, measured on this machine's disk:
//! an instance disk made from a cached image, and copies of a 1 GiB volume
//! full of data (snapshot, and a new volume from the snapshot).
//!
//! `cargo run --release -p kumo-storage --example figures -- DIR` (DIR on the disk to measure).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kumo_storage::volume_backend::GIB;
use kumo_storage::{BackingImage, FileVolumeBackend, InstanceDisks, QemuImgDisks, VolumeBackend};
use kumo_wire::api::DiskFormat;
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::{InstanceId, SnapshotId, VolumeId};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn qemu_io(path: &std::path::Path, cmd: &str) {
    let out = std::process::Command::new("qemu-io").args(["-f", "qcow2", "-c", cmd]).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::main]
async fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/var/tmp".into()));
    let work = tempfile::tempdir_in(&dir).unwrap();

    // An instance disk from a cached image: qemu-img info of the base (backing
    // and size checks) and a qcow2 overlay grown to the flavor's size.
    let base = work.path().join("base.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("2G")
        .output()
        .unwrap();
    assert!(out.status.success());
    qemu_io(&base, "write -P 0x5a 0 256M");
    let disks = QemuImgDisks::new(work.path().join("instances"));
    let backing = BackingImage { path: base.clone(), format: DiskFormat::Qcow2 };
    let mut samples = Vec::new();
    for n in 0..20u32 {
        let id: InstanceId = format!("i-{n:017x}").parse().unwrap();
        let started = Instant::now();
        disks.ensure_root_disk(&id, Some(&backing), 10).await.unwrap();
        samples.push(started.elapsed());
        disks.remove(&id).await.unwrap();
    }
    println!(
        "instance disk from a cached image (10 GiB overlay on a 2 GiB qcow2 base, median of 20): {}",
        ms(median(samples))
    );

    // A 1 GiB volume full of data: offline snapshot and a new volume from it.
    let backend = FileVolumeBackend::new(VolumeBackendKind::Local, work.path().join("local"));
    let vol: VolumeId = "vol-00000000000000001".parse().unwrap();
    backend.create_volume(&vol, GIB, None).await.unwrap();
    let path = backend.volume_source(&vol).path().to_owned();
    // Distinct content per MiB so nothing is deduplicated or zero-detected.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 1073741824 /dev/urandom > {raw} && qemu-img convert -n -f raw -O qcow2 {raw} {vol} && rm {raw}",
            raw = work.path().join("fill.raw").display(),
            vol = path.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snap: SnapshotId = "snap-00000000000000001".parse().unwrap();
    let started = Instant::now();
    let stored = backend.snapshot(&vol, &snap).await.unwrap();
    let took = started.elapsed();
    println!(
        "snapshot of a 1 GiB volume full of data (offline, qemu-img convert): {} ({} MiB stored, {:.0} MB/s)",
        ms(took),
        stored >> 20,
        GIB as f64 / 1e6 / took.as_secs_f64()
    );
    let copy: VolumeId = "vol-00000000000000002".parse().unwrap();
    let started = Instant::now();
    backend.create_volume(&copy, GIB, Some(&snap)).await.unwrap();
    println!("new 1 GiB volume from that snapshot (full copy): {}", ms(started.elapsed()));
}
