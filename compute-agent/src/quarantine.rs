//! The quarantine: where the storage sweep puts local volume and snapshot
//! files that the controller does not list, instead of deleting them. A
//! database restored from a backup, or a host registered again under a new
//! id, would otherwise wipe its tenants' volumes.
//!
//! Layout under `state_dir`:
//! - `quarantine/<entry>/`: one entry per moved volume or snapshot, named
//!   `<resource id>.<milliseconds>`, holding its files and `entry.json`
//!   (where they came from, when, whether this agent created them);
//! - `created/<resource id>`: an empty marker written when this agent
//!   creates a volume or snapshot file, removed when it deletes it on request.
//!
//! An entry is deleted only once `quarantine_grace_secs` have passed, and only
//! if this agent created its files; anything else stays until an admin
//! restores it (the controller relays the request in the desired state).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kumo_wire::agent::{QuarantineKind, QuarantinedFile};
use kumo_wire::Timestamp;
use serde::{Deserialize, Serialize};

/// The entry's record, `entry.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryRecord {
    kind: QuarantineKind,
    resource_id: String,
    quarantined_at: Timestamp,
    created_here: bool,
    /// Where each moved file came from (the entry holds it under its file name).
    files: Vec<PathBuf>,
}

const ENTRY_FILE: &str = "entry.json";

/// Why a quarantine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// A file or directory could not be read, moved or removed.
    #[error("quarantine I/O failed at {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No entry of that id.
    #[error("no quarantine entry {0}")]
    Unknown(String),
    /// Restoring would overwrite a file that is there again.
    #[error("cannot restore {entry}: {path} exists again (left in quarantine)")]
    Occupied {
        /// The entry.
        entry: String,
        /// The file in the way.
        path: PathBuf,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> QuarantineError + '_ {
    move |source| QuarantineError::Io { path: path.to_owned(), source }
}

/// The agent's quarantine of unlisted local storage files.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
    created_dir: PathBuf,
    grace: Duration,
}

/// Whether `id` is a plain name (no path separators, no dot-only names).
fn plain(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains('/') && !id.contains('\0')
}

impl Quarantine {
    /// The quarantine under `state_dir`, deleting files it created after `grace`.
    pub fn new(state_dir: &Path, grace: Duration) -> Self {
        Self { dir: state_dir.join("quarantine"), created_dir: state_dir.join("created"), grace }
    }

    /// Records that this agent created the file(s) of `resource_id`.
    pub fn record_created(&self, resource_id: &str) {
        if !plain(resource_id) {
            return;
        }
        let marker = self.created_dir.join(resource_id);
        let written = std::fs::create_dir_all(&self.created_dir).and_then(|()| std::fs::write(&marker, b""));
        if let Err(err) = written {
            tracing::warn!(file = %marker.display(), error = %err, "cannot record a file this agent created");
        }
    }

    /// Forgets `resource_id` once its files were deleted on request.
    pub fn forget_created(&self, resource_id: &str) {
        if plain(resource_id) {
            let _ = std::fs::remove_file(self.created_dir.join(resource_id));
        }
    }

    /// Whether this agent created the file(s) of `resource_id`.
    pub fn created(&self, resource_id: &str) -> bool {
        plain(resource_id) && self.created_dir.join(resource_id).exists()
    }

    /// Moves the existing ones of `files` (the files of one volume or
    /// snapshot) into a new entry. `None` when none of them exists.
    pub async fn take(
        &self,
        kind: QuarantineKind,
        resource_id: &str,
        files: &[PathBuf],
        now: Timestamp,
    ) -> Result<Option<QuarantinedFile>, QuarantineError> {
        let present: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
        if present.is_empty() || !plain(resource_id) {
            return Ok(None);
        }
        let id = format!("{resource_id}.{}", now.millis());
        let entry = self.dir.join(&id);
        tokio::fs::create_dir_all(&entry).await.map_err(io_at(&entry))?;
        let record = EntryRecord {
            kind,
            resource_id: resource_id.to_owned(),
            quarantined_at: now,
            created_here: self.created(resource_id),
            files: present.iter().map(|p| (*p).clone()).collect(),
        };
        // The record first: an entry whose files moved always says where they came from.
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        tokio::fs::write(entry.join(ENTRY_FILE), json).await.map_err(io_at(&entry))?;
        for file in &present {
            let Some(name) = file.file_name() else { continue };
            tokio::fs::rename(file, entry.join(name)).await.map_err(io_at(file))?;
        }
        tracing::warn!(entry = %id, kind = kind.as_str(), resource = resource_id, created_here = record.created_here,
            "moved a local file the controller does not list into the quarantine");
        Ok(Some(self.view(&id, &record).await))
    }

    async fn view(&self, id: &str, record: &EntryRecord) -> QuarantinedFile {
        let entry = self.dir.join(id);
        let mut size_bytes = 0;
        for file in &record.files {
            if let Some(name) = file.file_name() {
                size_bytes += tokio::fs::metadata(entry.join(name)).await.map(|m| m.len()).unwrap_or(0);
            }
        }
        let grace_ms = i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX / 4);
        QuarantinedFile {
            id: id.to_owned(),
            kind: record.kind,
            resource_id: record.resource_id.clone(),
            size_bytes,
            quarantined_at: record.quarantined_at,
            created_here: record.created_here,
            delete_after: record.created_here.then(|| record.quarantined_at.plus_millis(grace_ms)),
        }
    }

    async fn record_of(&self, id: &str) -> Option<EntryRecord> {
        let bytes = tokio::fs::read(self.dir.join(id).join(ENTRY_FILE)).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every entry, sorted by id.
    pub async fn list(&self) -> Vec<QuarantinedFile> {
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else { return Vec::new() };
        let mut out = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let id = entry.file_name().to_string_lossy().into_owned();
            match self.record_of(&id).await {
                Some(record) => out.push(self.view(&id, &record).await),
                None => tracing::warn!(entry = %id, "a quarantine entry without a readable record (left alone)"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Puts an entry's files back where they were and removes the entry.
    pub async fn restore(&self, id: &str) -> Result<(), QuarantineError> {
        let record = match plain(id) {
            true => self.record_of(id).await,
            false => None,
        };
        let record = record.ok_or_else(|| QuarantineError::Unknown(id.to_owned()))?;
        let entry = self.dir.join(id);
        if let Some(path) = record.files.iter().find(|p| p.exists()) {
            return Err(QuarantineError::Occupied { entry: id.to_owned(), path: path.clone() });
        }
        for file in &record.files {
            let Some(name) = file.file_name() else { continue };
            if let Some(parent) = file.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(io_at(parent))?;
            }
            tokio::fs::rename(entry.join(name), file).await.map_err(io_at(file))?;
        }
        tokio::fs::remove_dir_all(&entry).await.map_err(io_at(&entry))?;
        tracing::info!(entry = %id, resource = %record.resource_id, "restored from the quarantine");
        Ok(())
    }

    /// Deletes the entries whose grace period is over, if this agent created
    /// their files; returns their ids. Others are never deleted.
    pub async fn expire(&self, now: Timestamp) -> Vec<String> {
        let mut removed = Vec::new();
        for item in self.list().await {
            let due = item.delete_after.is_some_and(|at| at <= now);
            if !(item.created_here && due) {
                continue;
            }
            let entry = self.dir.join(&item.id);
            match tokio::fs::remove_dir_all(&entry).await {
                Ok(()) => {
                    tracing::warn!(entry = %item.id, resource = %item.resource_id,
                        "deleted a quarantined file after its grace period");
                    self.forget_created(&item.resource_id);
                    removed.push(item.id);
                }
                Err(err) => tracing::warn!(entry = %item.id, error = %err, "cannot delete a quarantined file"),
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(grace: Duration) -> (tempfile::TempDir, Quarantine, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Quarantine::new(dir.path(), grace);
        let volumes = dir.path().join("volumes");
        std::fs::create_dir_all(&volumes).expect("mkdir");
        (dir, q, volumes)
    }

    #[tokio::test]
    async fn unlisted_files_are_moved_listed_and_restored_intact() {
        let (_dir, q, volumes) = setup(Duration::from_secs(3600));
        let file = volumes.join("vol-00000000000000001.qcow2");
        std::fs::write(&file, b"tenant data").expect("write");
        let partial = volumes.join("vol-00000000000000001.qcow2.partial");
        let files = [partial.clone(), file.clone()];
        let item =
            q.take(QuarantineKind::Volume, "vol-00000000000000001", &files, Timestamp(5_000)).await.expect("take");
        let item = item.expect("moved");
        assert!(!file.exists(), "moved away");
        assert_eq!((item.id.as_str(), item.size_bytes, item.created_here), ("vol-00000000000000001.5000", 11, false));
        assert_eq!(item.delete_after, None, "not created here: never deleted");
        assert_eq!(q.list().await, vec![item.clone()]);
        assert!(q
            .take(QuarantineKind::Volume, "vol-00000000000000001", &files, Timestamp(6_000))
            .await
            .expect("again")
            .is_none());

        // Something is at the original place again: restoring refuses to overwrite it.
        std::fs::write(&file, b"other").expect("write");
        let err = q.restore(&item.id).await.expect_err("occupied");
        assert!(matches!(err, QuarantineError::Occupied { .. }), "{err}");
        std::fs::remove_file(&file).expect("rm");
        q.restore(&item.id).await.expect("restore");
        assert_eq!(std::fs::read(&file).expect("back"), b"tenant data");
        assert!(q.list().await.is_empty());
        assert!(matches!(q.restore(&item.id).await, Err(QuarantineError::Unknown(_))));
        assert!(matches!(q.restore("../../etc").await, Err(QuarantineError::Unknown(_))));
    }

    #[tokio::test]
    async fn only_files_this_agent_created_are_deleted_and_only_after_the_grace_period() {
        let (_dir, q, volumes) = setup(Duration::from_secs(10));
        let mine = volumes.join("vol-00000000000000002.qcow2");
        let theirs = volumes.join("vol-00000000000000003.qcow2");
        std::fs::write(&mine, b"mine").expect("write");
        std::fs::write(&theirs, b"theirs").expect("write");
        q.record_created("vol-00000000000000002");
        let t0 = Timestamp(1_000_000);
        let a =
            q.take(QuarantineKind::Volume, "vol-00000000000000002", &[mine], t0).await.expect("take").expect("moved");
        let b =
            q.take(QuarantineKind::Volume, "vol-00000000000000003", &[theirs], t0).await.expect("take").expect("moved");
        assert_eq!((a.created_here, a.delete_after), (true, Some(t0.plus_millis(10_000))));
        assert!(!b.created_here);
        assert!(q.expire(t0.plus_millis(9_999)).await.is_empty(), "within the grace period");
        assert_eq!(q.expire(t0.plus_millis(10_000)).await, vec![a.id.clone()]);
        assert!(!q.created("vol-00000000000000002"));
        // Years later, the file this agent did not create is still there.
        assert!(q.expire(t0.plus_millis(100_000_000_000)).await.is_empty());
        assert_eq!(q.list().await, vec![b]);
    }
}
