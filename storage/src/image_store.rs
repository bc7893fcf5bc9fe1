//! The controller's image store: one directory per image, one file per role
//! (`disk`, `kernel`, `initrd`), written through a temporary file so a cut-off
//! upload never leaves a partial file behind.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kumo_wire::api::ImageFileRole;
use kumo_wire::ImageId;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    /// The upload was larger than the configured limit.
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The upload stream failed (e.g. the client went away halfway).
    #[error("the upload was cut off")]
    UploadInterrupted(#[source] io::Error),
    /// The file is not in the store.
    #[error("image file {image}/{role} is not in the store")]
    NotFound {
        /// The image.
        image: ImageId,
        /// The file's role.
        role: &'static str,
    },
    /// The store's disk failed.
    #[error("image store I/O failed at {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Distinguishes concurrent uploads of the same file in one process.
static STAGE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An uploaded file waiting to be inspected before it is put in place.
#[derive(Debug)]
pub struct Staged {
    /// Where it is now (hidden from readers).
    pub tmp_path: PathBuf,
    final_path: PathBuf,
    /// Its size and checksum.
    pub stored: StoredFile,
    /// The image it belongs to.
    pub image: ImageId,
    /// Its role in the image.
    pub role: ImageFileRole,
    /// Marks the image's directory busy until this is committed or dropped.
    _busy: Busy,
}

/// Image directories with an upload in progress in this process (image id ->
/// uploads), so that [`FsImageStore::list`] reports them as active however
/// long the upload takes.
type BusyMap = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<ImageId, usize>>>;

/// One upload in progress; unmarks its directory when dropped.
#[derive(Debug)]
struct Busy {
    map: BusyMap,
    image: ImageId,
}

impl Busy {
    fn new(map: &BusyMap, image: &ImageId) -> Self {
        *map.lock().unwrap_or_else(|p| p.into_inner()).entry(image.clone()).or_default() += 1;
        Self { map: map.clone(), image: image.clone() }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.image) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.image);
            }
        }
    }
}

/// The newest modification time of a directory and the files in it (an
/// upload another process is writing keeps its partial file's time fresh).
async fn last_change(dir: &Path) -> std::time::SystemTime {
    let mtime = |m: std::fs::Metadata| m.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let mut newest = tokio::fs::metadata(dir).await.map_or(std::time::SystemTime::UNIX_EPOCH, mtime);
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            if let Ok(m) = entry.metadata().await {
                newest = newest.max(mtime(m));
            }
        }
    }
    newest
}

async fn remove_dir_if_empty(dir: &Path) {
    // Fails harmlessly when the directory still holds other files.
    let _ = tokio::fs::remove_dir(dir).await;
}

/// Size and checksum of a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Bytes written.
    pub size_bytes: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

/// Image files on a local (or shared) filesystem.
#[derive(Debug, Clone)]
pub struct FsImageStore {
    root: PathBuf,
    busy: BusyMap,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageStoreError + '_ {
    move |source| ImageStoreError::Io { path: path.to_owned(), source }
}

impl FsImageStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageStoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_at(&root))?;
        Ok(Self { root, busy: BusyMap::default() })
    }

    /// The path a stored file lives at.
    pub fn file_path(&self, image: &ImageId, role: ImageFileRole) -> PathBuf {
        self.root.join(image.as_str()).join(role.as_str())
    }

    /// Streams `body` into the store, hashing as it goes. Replaces an earlier
    /// upload of the same file only once the new one is complete.
    pub async fn put<S>(
        &self,
        image: &ImageId,
        role: ImageFileRole,
        body: S,
        max_bytes: u64,
    ) -> Result<StoredFile, ImageStoreError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Unpin,
    {
        let staged = self.stage(image, role, body, max_bytes).await?;
        let stored = staged.stored.clone();
        self.commit(staged).await?;
        Ok(stored)
    }

    /// Streams `body` to a temporary file beside the file's final name, hashing
    /// as it goes, so it can be inspected before [`FsImageStore::commit`] puts
    /// it in place (or [`FsImageStore::discard`] drops it). A failed or
    /// oversized upload leaves nothing behind, not even the image's directory
    /// when it held nothing else.
    pub async fn stage<S>(
        &self,
        image: &ImageId,
        role: ImageFileRole,
        mut body: S,
        max_bytes: u64,
    ) -> Result<Staged, ImageStoreError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Unpin,
    {
        let busy = Busy::new(&self.busy, image);
        let dir = self.root.join(image.as_str());
        tokio::fs::create_dir_all(&dir).await.map_err(io_at(&dir))?;
        let final_path = dir.join(role.as_str());
        let unique = STAGE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp_path = dir.join(format!(".{}.partial-{}-{unique}", role.as_str(), std::process::id()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp_path).await.map_err(io_at(&tmp_path))?;
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(ImageStoreError::UploadInterrupted)?;
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(ImageStoreError::TooLarge { limit: max_bytes });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io_at(&tmp_path))?;
            }
            file.sync_all().await.map_err(io_at(&tmp_path))?;
            Ok(StoredFile { size_bytes: size, sha256: hex::encode(hasher.finalize()) })
        }
        .await;
        match result {
            Ok(stored) => Ok(Staged { tmp_path, final_path, stored, image: image.clone(), role, _busy: busy }),
            Err(err) => {
                let _ = tokio::fs::remove_file(&tmp_path).await;
                remove_dir_if_empty(&dir).await;
                Err(err)
            }
        }
    }

    /// Puts a staged file in place (replacing an earlier file of the same role).
    pub async fn commit(&self, staged: Staged) -> Result<(), ImageStoreError> {
        tokio::fs::rename(&staged.tmp_path, &staged.final_path).await.map_err(io_at(&staged.final_path))
    }

    /// Drops a staged file (and the image's directory if nothing else is in it).
    pub async fn discard(&self, staged: Staged) {
        let _ = tokio::fs::remove_file(&staged.tmp_path).await;
        if let Some(dir) = staged.tmp_path.parent() {
            remove_dir_if_empty(dir).await;
        }
    }

    /// Copies a stored file of one image to another (snapshot images reuse
    /// their source's kernel and initrd).
    pub async fn copy_file(&self, from: &ImageId, to: &ImageId, role: ImageFileRole) -> Result<u64, ImageStoreError> {
        let src = self.file_path(from, role);
        let dir = self.root.join(to.as_str());
        tokio::fs::create_dir_all(&dir).await.map_err(io_at(&dir))?;
        let dst = self.file_path(to, role);
        let tmp = dir.join(format!(".{}.copy-{}", role.as_str(), std::process::id()));
        // A hard link costs nothing; files in the store are never written in place.
        let _ = tokio::fs::remove_file(&tmp).await;
        let linked = tokio::fs::hard_link(&src, &tmp).await;
        if linked.is_err() {
            tokio::fs::copy(&src, &tmp).await.map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ImageStoreError::NotFound { image: from.clone(), role: role.as_str() },
                _ => io_at(&src)(e),
            })?;
        }
        tokio::fs::rename(&tmp, &dst).await.map_err(io_at(&dst))?;
        Ok(tokio::fs::metadata(&dst).await.map_err(io_at(&dst))?.len())
    }

    /// The images that have a directory in the store (for garbage collection),
    /// with the directory's last sign of life: now while this process stages
    /// a file in it (an upload in progress, however long it takes), else the
    /// newest modification time of the directory and its files.
    pub async fn list(&self) -> Result<Vec<(ImageId, std::time::SystemTime)>, ImageStoreError> {
        let mut entries = tokio::fs::read_dir(&self.root).await.map_err(io_at(&self.root))?;
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_at(&self.root))? {
            let Some(Ok(id)) = entry.file_name().to_str().map(str::parse::<ImageId>) else { continue };
            let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&id);
            let modified = if busy { std::time::SystemTime::now() } else { last_change(&entry.path()).await };
            out.push((id, modified));
        }
        out.sort();
        Ok(out)
    }

    /// Opens a stored file for reading, with its size.
    pub async fn open_file(
        &self,
        image: &ImageId,
        role: ImageFileRole,
    ) -> Result<(tokio::fs::File, u64), ImageStoreError> {
        let path = self.file_path(image, role);
        match tokio::fs::File::open(&path).await {
            Ok(file) => {
                let len = file.metadata().await.map_err(io_at(&path))?.len();
                Ok((file, len))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ImageStoreError::NotFound { image: image.clone(), role: role.as_str() })
            }
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// Removes every file of an image. Removing a missing image is not an error.
    pub async fn delete_image(&self, image: &ImageId) -> Result<(), ImageStoreError> {
        let dir = self.root.join(image.as_str());
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&dir)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn chunks(parts: Vec<Result<&'static [u8], io::Error>>) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        stream::iter(parts.into_iter().map(|p| p.map(Bytes::from_static)))
    }

    #[tokio::test]
    async fn stores_and_checksums_a_streamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsImageStore::open(dir.path()).unwrap();
        let id = ImageId::generate();
        let stored =
            store.put(&id, ImageFileRole::Kernel, chunks(vec![Ok(b"hello "), Ok(b"world")]), 100).await.unwrap();
        assert_eq!(stored.size_bytes, 11);
        assert_eq!(stored.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        let (_, len) = store.open_file(&id, ImageFileRole::Kernel).await.unwrap();
        assert_eq!(len, 11);
    }

    #[tokio::test]
    async fn a_cut_off_or_oversized_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsImageStore::open(dir.path()).unwrap();
        let id = ImageId::generate();
        let cut = chunks(vec![Ok(b"abc"), Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone"))]);
        assert!(matches!(
            store.put(&id, ImageFileRole::Disk, cut, 100).await,
            Err(ImageStoreError::UploadInterrupted(_))
        ));
        let big = chunks(vec![Ok(b"0123456789"), Ok(b"0123456789")]);
        assert!(matches!(
            store.put(&id, ImageFileRole::Disk, big, 15).await,
            Err(ImageStoreError::TooLarge { limit: 15 })
        ));
        assert!(!dir.path().join(id.as_str()).exists(), "the image's directory was left behind");
        assert!(matches!(store.open_file(&id, ImageFileRole::Disk).await, Err(ImageStoreError::NotFound { .. })));
        store.delete_image(&id).await.unwrap();
        store.delete_image(&id).await.unwrap();
        assert!(!dir.path().join(id.as_str()).exists());
    }

    #[tokio::test]
    async fn staged_files_are_invisible_until_committed_and_discarding_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsImageStore::open(dir.path()).unwrap();
        let id = ImageId::generate();
        let staged = store.stage(&id, ImageFileRole::Disk, chunks(vec![Ok(b"abc")]), 100).await.unwrap();
        assert!(staged.tmp_path.exists());
        assert!(store.open_file(&id, ImageFileRole::Disk).await.is_err());
        store.discard(staged).await;
        assert!(!dir.path().join(id.as_str()).exists());

        let staged = store.stage(&id, ImageFileRole::Disk, chunks(vec![Ok(b"abc")]), 100).await.unwrap();
        store.commit(staged).await.unwrap();
        assert_eq!(store.open_file(&id, ImageFileRole::Disk).await.unwrap().1, 3);
        let copy = ImageId::generate();
        assert_eq!(store.copy_file(&id, &copy, ImageFileRole::Disk).await.unwrap(), 3);
        let listed: Vec<ImageId> = store.list().await.unwrap().into_iter().map(|(i, _)| i).collect();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&id) && listed.contains(&copy));
    }

    /// Issue 12: the orphan sweep deleted one-shot uploads that took longer
    /// than its grace; a directory with an upload in progress is listed as
    /// active now, however old its files are.
    #[tokio::test]
    async fn a_directory_with_an_upload_in_progress_is_listed_as_active() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsImageStore::open(dir.path()).unwrap();
        let id = ImageId::generate();
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, io::Error>>();
        tx.unbounded_send(Ok(Bytes::from_static(b"first bytes"))).unwrap();
        let staging = {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move { store.stage(&id, ImageFileRole::Disk, rx, 1000).await })
        };
        // Wait for the directory, then age it and its partial file by an hour.
        let image_dir = dir.path().join(id.as_str());
        while std::fs::read_dir(&image_dir).map_or(true, |mut d| d.next().is_none()) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for entry in std::fs::read_dir(&image_dir).unwrap() {
            std::fs::File::options().write(true).open(entry.unwrap().path()).unwrap().set_modified(old).unwrap();
        }
        std::fs::File::open(&image_dir).unwrap().set_modified(old).unwrap();
        let (_, seen) = store.list().await.unwrap().into_iter().find(|(i, _)| *i == id).unwrap();
        assert!(seen.elapsed().unwrap_or_default() < std::time::Duration::from_secs(60), "listed as active");
        drop(tx);
        let staged = staging.await.unwrap().unwrap();
        store.discard(staged).await;
        // Done: an old directory of another process's leftovers shows its real age.
        std::fs::create_dir_all(&image_dir).unwrap();
        std::fs::File::open(&image_dir).unwrap().set_modified(old).unwrap();
        let (_, seen) = store.list().await.unwrap().into_iter().find(|(i, _)| *i == id).unwrap();
        assert!(seen.elapsed().unwrap() > std::time::Duration::from_secs(3000));
    }
}
