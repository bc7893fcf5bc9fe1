//! Volume backends: where a volume's bytes live, and how volumes and their
//! snapshots are created, grown, copied and removed there.
//!
//! [`VolumeBackend`] is cut so that a network backend can follow: a volume is
//! reached through a [`VolumeSource`] (today a file; an RBD image or an iSCSI
//! LUN would be further variants that the domain XML renders as
//! `<disk type='network'>`), and snapshots are the backend's own business
//! (files here; `rbd snap create` there). Live copies of attached volumes are
//! made by the hypervisor into [`VolumeBackend::live_snapshot_target`]; a
//! backend with native crash-consistent snapshots would return `None` there
//! and snapshot in [`VolumeBackend::snapshot`] even while attached.
//!
//! [`FileVolumeBackend`] keeps qcow2 files under one directory: a host-local
//! directory (`local`: only that host's instances can attach them) or a
//! directory every host mounts, e.g. over NFS (`shared`). Files are written
//! under a temporary name and renamed into place, so a crash never leaves a
//! file that looks complete.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kumo_wire::api::DiskFormat;
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::{SnapshotId, VolumeId};

use crate::qemu_img::{self, QemuImgError};

/// One GiB.
pub const GIB: u64 = 1024 * 1024 * 1024;

/// How a hypervisor reaches a volume or snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A file on a filesystem this host sees.
    File {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: DiskFormat,
    },
}

impl VolumeSource {
    /// The file, for file-backed sources.
    pub fn path(&self) -> &Path {
        match self {
            Self::File { path, .. } => path,
        }
    }
}

/// Errors of a volume backend. Each names the volume or snapshot, so the
/// message can be shown to the user as it is.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The snapshot a volume should be made from is not in this backend.
    #[error("snapshot {snapshot} is not in the {backend} volume backend")]
    MissingSnapshot {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The backend.
        backend: VolumeBackendKind,
    },
    /// A volume that should exist does not.
    #[error("volume {0} does not exist in this backend")]
    MissingVolume(VolumeId),
    /// A volume would have to shrink.
    #[error("volume {volume} is {current_bytes} bytes; it cannot shrink to {requested_bytes}")]
    Shrink {
        /// The volume.
        volume: VolumeId,
        /// Its size now.
        current_bytes: u64,
        /// The size asked for.
        requested_bytes: u64,
    },
    /// qemu-img failed.
    #[error("{what}")]
    QemuImg {
        /// What was being done, e.g. "creating volume vol-...".
        what: String,
        /// The failure.
        #[source]
        source: QemuImgError,
    },
    /// The backend's directory could not be read or written.
    #[error("volume backend I/O failed at {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io { path: path.to_owned(), source }
}

/// Where a backend keeps volumes and snapshots, and what it can do with them.
#[async_trait]
pub trait VolumeBackend: Send + Sync + std::fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> VolumeBackendKind;

    /// How the hypervisor reaches a volume (whether or not it exists).
    fn volume_source(&self, volume: &VolumeId) -> VolumeSource;

    /// The guest-visible size of a volume; `None` when it does not exist.
    async fn volume_size(&self, volume: &VolumeId) -> Result<Option<u64>, VolumeError>;

    /// Bytes a volume takes in the backend; `None` when it does not exist.
    async fn volume_stored_bytes(&self, volume: &VolumeId) -> Result<Option<u64>, VolumeError>;

    /// Creates a volume of `size_bytes`, empty or with `from`'s content,
    /// unless it exists (an existing volume is never touched).
    async fn create_volume(
        &self,
        volume: &VolumeId,
        size_bytes: u64,
        from: Option<&SnapshotId>,
    ) -> Result<(), VolumeError>;

    /// Grows a volume that no running guest has open to `size_bytes`.
    async fn grow_volume(&self, volume: &VolumeId, size_bytes: u64) -> Result<(), VolumeError>;

    /// Removes a volume. `false` when it was not there.
    async fn delete_volume(&self, volume: &VolumeId) -> Result<bool, VolumeError>;

    /// Whether a snapshot exists; its stored bytes if so.
    async fn snapshot_stored_bytes(&self, snapshot: &SnapshotId) -> Result<Option<u64>, VolumeError>;

    /// Copies a volume that no running guest writes to into a snapshot.
    async fn snapshot(&self, volume: &VolumeId, snapshot: &SnapshotId) -> Result<u64, VolumeError>;

    /// Where a hypervisor's live copy of an attached volume should write the
    /// snapshot (a qcow2 file), to be put in place by
    /// [`VolumeBackend::commit_live_snapshot`]; `None` when the backend
    /// snapshots attached volumes itself.
    fn live_snapshot_target(&self, snapshot: &SnapshotId) -> Option<PathBuf>;

    /// Puts a finished live copy in place; returns its stored bytes.
    async fn commit_live_snapshot(&self, snapshot: &SnapshotId) -> Result<u64, VolumeError>;

    /// Removes a snapshot. `false` when it was not there.
    async fn delete_snapshot(&self, snapshot: &SnapshotId) -> Result<bool, VolumeError>;

    /// Every volume and snapshot in the backend (for leak sweeps).
    async fn list(&self) -> Result<(Vec<VolumeId>, Vec<SnapshotId>), VolumeError>;

    /// The files that hold a volume (complete or half-written), for moving
    /// it aside whole; empty for backends that do not keep volumes in files.
    fn volume_files(&self, volume: &VolumeId) -> Vec<PathBuf>;

    /// The files that hold a snapshot (complete or half-written).
    fn snapshot_files(&self, snapshot: &SnapshotId) -> Vec<PathBuf>;
}

/// qcow2 files under `<root>/volumes/` and `<root>/snapshots/`.
#[derive(Debug, Clone)]
pub struct FileVolumeBackend {
    kind: VolumeBackendKind,
    root: PathBuf,
}

impl FileVolumeBackend {
    /// A backend of `kind` keeping its files under `root`.
    pub fn new(kind: VolumeBackendKind, root: impl Into<PathBuf>) -> Self {
        Self { kind, root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn volume_path(&self, volume: &VolumeId) -> PathBuf {
        self.root.join("volumes").join(format!("{volume}.qcow2"))
    }

    fn snapshot_path(&self, snapshot: &SnapshotId) -> PathBuf {
        self.root.join("snapshots").join(format!("{snapshot}.qcow2"))
    }

    fn partial(path: &Path) -> PathBuf {
        let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".partial");
        path.with_file_name(name)
    }

    async fn ensure_dir(path: &Path) -> Result<(), VolumeError> {
        let dir = path.parent().unwrap_or(path);
        tokio::fs::create_dir_all(dir).await.map_err(io_at(dir))
    }

    async fn stored(path: &Path) -> Result<Option<u64>, VolumeError> {
        match tokio::fs::metadata(path).await {
            Ok(meta) => Ok(Some(meta.blocks() * 512)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(path)(e)),
        }
    }

    async fn remove(path: &Path) -> Result<bool, VolumeError> {
        let _ = tokio::fs::remove_file(Self::partial(path)).await;
        match tokio::fs::remove_file(path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_at(path)(e)),
        }
    }

    /// Runs `make` on the temporary name of `path`, then renames it into place.
    async fn build<F, Fut>(path: &Path, what: String, make: F) -> Result<(), VolumeError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<(), QemuImgError>>,
    {
        Self::ensure_dir(path).await?;
        let tmp = Self::partial(path);
        let _ = tokio::fs::remove_file(&tmp).await;
        if let Err(source) = make(tmp.clone()).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(VolumeError::QemuImg { what, source });
        }
        tokio::fs::rename(&tmp, path).await.map_err(io_at(path))
    }

    async fn list_dir<T: std::str::FromStr>(dir: &Path) -> Result<Vec<T>, VolumeError> {
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(dir)(e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_at(dir))? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Half-written files belong to the volume or snapshot they are named after.
            let stem = name.strip_suffix(".partial").unwrap_or(name);
            if let Some(id) = stem.strip_suffix(".qcow2").and_then(|s| s.parse().ok()) {
                out.push(id);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl VolumeBackend for FileVolumeBackend {
    fn kind(&self) -> VolumeBackendKind {
        self.kind
    }

    fn volume_source(&self, volume: &VolumeId) -> VolumeSource {
        VolumeSource::File { path: self.volume_path(volume), format: DiskFormat::Qcow2 }
    }

    async fn volume_size(&self, volume: &VolumeId) -> Result<Option<u64>, VolumeError> {
        let path = self.volume_path(volume);
        if Self::stored(&path).await?.is_none() {
            return Ok(None);
        }
        let info = qemu_img::info(&path, "qcow2")
            .await
            .map_err(|source| VolumeError::QemuImg { what: format!("reading volume {volume}"), source })?;
        Ok(Some(info.virtual_size))
    }

    async fn volume_stored_bytes(&self, volume: &VolumeId) -> Result<Option<u64>, VolumeError> {
        Self::stored(&self.volume_path(volume)).await
    }

    async fn create_volume(
        &self,
        volume: &VolumeId,
        size_bytes: u64,
        from: Option<&SnapshotId>,
    ) -> Result<(), VolumeError> {
        let path = self.volume_path(volume);
        if Self::stored(&path).await?.is_some() {
            return Ok(());
        }
        match from {
            None => {
                Self::build(&path, format!("creating volume {volume}"), |tmp| async move {
                    qemu_img::create_qcow2(&tmp, size_bytes).await
                })
                .await?
            }
            Some(snapshot) => {
                let src = self.snapshot_path(snapshot);
                if Self::stored(&src).await?.is_none() {
                    return Err(VolumeError::MissingSnapshot { snapshot: snapshot.clone(), backend: self.kind });
                }
                // A full copy: the volume never depends on the snapshot, so either can go first.
                Self::build(&path, format!("copying snapshot {snapshot} into volume {volume}"), |tmp| async move {
                    qemu_img::convert_to_qcow2(&src, "qcow2", &tmp).await?;
                    let info = qemu_img::info(&tmp, "qcow2").await?;
                    if info.virtual_size < size_bytes {
                        qemu_img::grow_qcow2(&tmp, size_bytes).await?;
                    }
                    Ok(())
                })
                .await?
            }
        }
        tracing::info!(%volume, backend = %self.kind, size_bytes, from = ?from, "volume created");
        Ok(())
    }

    async fn grow_volume(&self, volume: &VolumeId, size_bytes: u64) -> Result<(), VolumeError> {
        let current = self.volume_size(volume).await?.ok_or_else(|| VolumeError::MissingVolume(volume.clone()))?;
        if current > size_bytes {
            return Err(VolumeError::Shrink {
                volume: volume.clone(),
                current_bytes: current,
                requested_bytes: size_bytes,
            });
        }
        if current == size_bytes {
            return Ok(());
        }
        qemu_img::grow_qcow2(&self.volume_path(volume), size_bytes)
            .await
            .map_err(|source| VolumeError::QemuImg { what: format!("growing volume {volume}"), source })
    }

    async fn delete_volume(&self, volume: &VolumeId) -> Result<bool, VolumeError> {
        Self::remove(&self.volume_path(volume)).await
    }

    async fn snapshot_stored_bytes(&self, snapshot: &SnapshotId) -> Result<Option<u64>, VolumeError> {
        Self::stored(&self.snapshot_path(snapshot)).await
    }

    async fn snapshot(&self, volume: &VolumeId, snapshot: &SnapshotId) -> Result<u64, VolumeError> {
        let src = self.volume_path(volume);
        if Self::stored(&src).await?.is_none() {
            return Err(VolumeError::MissingVolume(volume.clone()));
        }
        let path = self.snapshot_path(snapshot);
        // Without -U: if a running guest still has the volume open, qemu-img
        // fails on its lock instead of copying a volume that changes under it.
        Self::build(&path, format!("copying volume {volume} into snapshot {snapshot}"), |tmp| async move {
            qemu_img::convert_to_qcow2(&src, "qcow2", &tmp).await
        })
        .await?;
        Ok(Self::stored(&path).await?.unwrap_or(0))
    }

    fn live_snapshot_target(&self, snapshot: &SnapshotId) -> Option<PathBuf> {
        Some(Self::partial(&self.snapshot_path(snapshot)))
    }

    async fn commit_live_snapshot(&self, snapshot: &SnapshotId) -> Result<u64, VolumeError> {
        let path = self.snapshot_path(snapshot);
        tokio::fs::rename(Self::partial(&path), &path).await.map_err(io_at(&path))?;
        Ok(Self::stored(&path).await?.unwrap_or(0))
    }

    async fn delete_snapshot(&self, snapshot: &SnapshotId) -> Result<bool, VolumeError> {
        Self::remove(&self.snapshot_path(snapshot)).await
    }

    fn volume_files(&self, volume: &VolumeId) -> Vec<PathBuf> {
        let path = self.volume_path(volume);
        vec![Self::partial(&path), path]
    }

    fn snapshot_files(&self, snapshot: &SnapshotId) -> Vec<PathBuf> {
        let path = self.snapshot_path(snapshot);
        vec![Self::partial(&path), path]
    }

    async fn list(&self) -> Result<(Vec<VolumeId>, Vec<SnapshotId>), VolumeError> {
        let mut volumes: Vec<VolumeId> = Self::list_dir(&self.root.join("volumes")).await?;
        let mut snapshots: Vec<SnapshotId> = Self::list_dir(&self.root.join("snapshots")).await?;
        volumes.sort();
        volumes.dedup();
        snapshots.sort();
        snapshots.dedup();
        Ok((volumes, snapshots))
    }
}

/// Prepares the directory a live copy writes into (hypervisors do not create it).
pub async fn prepare_target(path: &Path) -> Result<(), VolumeError> {
    FileVolumeBackend::ensure_dir(path).await?;
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(n: u8) -> VolumeId {
        format!("vol-{n:017x}").parse().expect("id")
    }

    fn snap(n: u8) -> SnapshotId {
        format!("snap-{n:017x}").parse().expect("id")
    }

    fn write_at(path: &Path, offset: u64, text: &str) {
        let out = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c"])
            .arg(format!("write -P 0x{:02x} {offset} 512", text.as_bytes()[0]))
            .arg(path)
            .output()
            .expect("qemu-io");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    fn reads_pattern(path: &Path, offset: u64, byte: u8) -> bool {
        let out = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-r", "-c"])
            .arg(format!("read -P 0x{byte:02x} {offset} 512"))
            .arg(path)
            .output()
            .expect("qemu-io");
        out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed")
    }

    #[tokio::test]
    async fn create_grow_snapshot_copy_and_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = FileVolumeBackend::new(VolumeBackendKind::Local, dir.path());
        assert_eq!(b.volume_size(&vol(1)).await.expect("size"), None);
        b.create_volume(&vol(1), GIB, None).await.expect("create");
        assert_eq!(b.volume_size(&vol(1)).await.expect("size"), Some(GIB));
        let path = b.volume_source(&vol(1)).path().to_owned();
        assert_eq!(path, dir.path().join("volumes").join(format!("{}.qcow2", vol(1))));
        write_at(&path, 0, "m");

        // Creating again is a no-op; growing works, shrinking is refused.
        b.create_volume(&vol(1), 5 * GIB, None).await.expect("exists");
        assert_eq!(b.volume_size(&vol(1)).await.expect("size"), Some(GIB));
        b.grow_volume(&vol(1), 2 * GIB).await.expect("grow");
        assert_eq!(b.volume_size(&vol(1)).await.expect("size"), Some(2 * GIB));
        let err = b.grow_volume(&vol(1), GIB).await.expect_err("shrink");
        assert!(matches!(err, VolumeError::Shrink { .. }), "{err}");

        let stored = b.snapshot(&vol(1), &snap(1)).await.expect("snapshot");
        assert!(stored > 0);
        assert_eq!(b.snapshot_stored_bytes(&snap(1)).await.expect("stored"), Some(stored));
        b.create_volume(&vol(2), 3 * GIB, Some(&snap(1))).await.expect("from snapshot");
        assert_eq!(b.volume_size(&vol(2)).await.expect("size"), Some(3 * GIB));
        let copy = b.volume_source(&vol(2)).path().to_owned();
        assert!(reads_pattern(&copy, 0, b'm'), "the copy carries the data");
        // The copy does not depend on the snapshot.
        assert!(b.delete_snapshot(&snap(1)).await.expect("delete snapshot"));
        assert!(reads_pattern(&copy, 0, b'm'));

        let err = b.create_volume(&vol(3), GIB, Some(&snap(9))).await.expect_err("missing snapshot");
        assert_eq!(err.to_string(), format!("snapshot {} is not in the local volume backend", snap(9)));
        assert_eq!(b.list().await.expect("list"), (vec![vol(1), vol(2)], vec![]));
        assert!(b.delete_volume(&vol(1)).await.expect("delete"));
        assert!(!b.delete_volume(&vol(1)).await.expect("again"));
        assert!(b.delete_volume(&vol(2)).await.expect("delete"));
        assert_eq!(b.list().await.expect("list"), (vec![], vec![]));
    }

    #[tokio::test]
    async fn live_snapshot_targets_are_committed_by_rename_and_partials_are_listed_for_sweeps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = FileVolumeBackend::new(VolumeBackendKind::Shared, dir.path());
        let target = b.live_snapshot_target(&snap(2)).expect("file backend");
        prepare_target(&target).await.expect("dir");
        std::fs::write(&target, vec![0u8; 4096]).expect("write");
        assert_eq!(b.list().await.expect("list").1, vec![snap(2)], "a partial file is found by a sweep");
        assert_eq!(b.snapshot_stored_bytes(&snap(2)).await.expect("stored"), None, "not complete yet");
        assert!(b.commit_live_snapshot(&snap(2)).await.expect("commit") > 0);
        assert!(b.snapshot_stored_bytes(&snap(2)).await.expect("stored").is_some());
        assert!(b.delete_snapshot(&snap(2)).await.expect("delete"));
    }
}
