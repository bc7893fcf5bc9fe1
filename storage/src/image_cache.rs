//! The per-host image cache: image files fetched from the controller's image
//! store into `<root>/<image-id>/<role>`, verified by size and SHA-256 before
//! they are used.
//!
//! A download streams into a temporary file beside its final name while it is
//! hashed; only a complete, verified file is renamed into place, so a cut-off
//! or corrupt download never leaves a file that looks cached. Concurrent
//! requests for the same file wait for one download. How bytes are fetched is
//! the caller's business ([`ImageFetcher`]): this module knows no HTTP.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use kumo_wire::agent::ImageFileRef;
use kumo_wire::api::ImageFileRole;
use kumo_wire::ImageId;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The bytes of one image file, as a fetcher delivers them.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// Why a fetcher could not start a download (its own error type, boxed).
pub type FetchError = Box<dyn std::error::Error + Send + Sync>;

/// Where image files come from (the controller's image store over HTTP in the
/// agent; an in-memory table in tests).
#[async_trait]
pub trait ImageFetcher: Send + Sync {
    /// Starts downloading one file of an image.
    async fn fetch(&self, image: &ImageId, role: ImageFileRole) -> Result<ByteStream, FetchError>;
}

/// Errors of the image cache. Each names the image and file, so the message
/// can be shown to the user as it is.
#[derive(Debug, thiserror::Error)]
pub enum ImageCacheError {
    /// The fetcher could not start the download.
    #[error("image {image} {}: download failed", .role.as_str())]
    Fetch {
        /// The image.
        image: ImageId,
        /// The file.
        role: ImageFileRole,
        /// The fetcher's error.
        #[source]
        source: FetchError,
    },
    /// The download broke off halfway.
    #[error("image {image} {}: download was cut off", .role.as_str())]
    Interrupted {
        /// The image.
        image: ImageId,
        /// The file.
        role: ImageFileRole,
        /// The stream's error.
        #[source]
        source: io::Error,
    },
    /// The file has another size than the controller announced.
    #[error("image {image} {}: size mismatch: expected {expected} bytes, got {actual}", .role.as_str())]
    SizeMismatch {
        /// The image.
        image: ImageId,
        /// The file.
        role: ImageFileRole,
        /// The announced size.
        expected: u64,
        /// The size received (at least this much when the download ran over).
        actual: u64,
    },
    /// The file's content is not what the controller announced.
    #[error("image {image} {}: checksum mismatch: expected sha256 {expected}, got {actual}", .role.as_str())]
    ChecksumMismatch {
        /// The image.
        image: ImageId,
        /// The file.
        role: ImageFileRole,
        /// The announced lowercase hex SHA-256.
        expected: String,
        /// The SHA-256 of what arrived.
        actual: String,
    },
    /// The cache directory could not be read or written.
    #[error("image cache I/O failed at {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageCacheError + '_ {
    move |source| ImageCacheError::Io { path: path.to_owned(), source }
}

/// Image files cached on this host.
pub struct ImageCache {
    root: PathBuf,
    fetcher: Arc<dyn ImageFetcher>,
    /// One lock per file path, so that one download serves every waiter.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache").field("root", &self.root).finish_non_exhaustive()
    }
}

impl ImageCache {
    /// A cache rooted at `root` (created on first download) that fetches through `fetcher`.
    pub fn new(root: impl Into<PathBuf>, fetcher: Arc<dyn ImageFetcher>) -> Self {
        Self { root: root.into(), fetcher, locks: Mutex::new(HashMap::new()) }
    }

    /// Where a cached file lives (whether or not it is there yet).
    pub fn path(&self, image: &ImageId, role: ImageFileRole) -> PathBuf {
        self.root.join(image.as_str()).join(role.as_str())
    }

    /// The local path of `file` of `image`, downloaded and verified first
    /// unless a file of the announced size is already cached.
    pub async fn ensure(&self, image: &ImageId, file: &ImageFileRef) -> Result<PathBuf, ImageCacheError> {
        let path = self.path(image, file.role);
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(locks.entry(path.clone()).or_default())
        };
        let _guard = lock.lock().await;

        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.len() == file.size_bytes => return Ok(path),
            Ok(meta) => {
                tracing::warn!(path = %path.display(), size = meta.len(), expected = file.size_bytes,
                    "cached image file has the wrong size; downloading it again");
                tokio::fs::remove_file(&path).await.map_err(io_at(&path))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&path)(e)),
        }

        let started = std::time::Instant::now();
        self.download(image, file, &path).await?;
        tracing::info!(%image, role = file.role.as_str(), bytes = file.size_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64, "image file cached");
        Ok(path)
    }

    /// Removes cached images not in `keep` whose files were fetched more than
    /// `min_age` ago and that no download is using; returns the images removed.
    /// The caller keeps every image an instance on the host is built on.
    pub async fn evict(
        &self,
        keep: &std::collections::HashSet<ImageId>,
        min_age: std::time::Duration,
    ) -> Result<Vec<ImageId>, ImageCacheError> {
        let mut entries = match tokio::fs::read_dir(&self.root).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&self.root)(e)),
        };
        let now = std::time::SystemTime::now();
        let mut removed = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_at(&self.root))? {
            let Some(Ok(image)) = entry.file_name().to_str().map(str::parse::<ImageId>) else { continue };
            if keep.contains(&image) {
                continue;
            }
            let dir = entry.path();
            let busy = {
                let locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                locks.iter().any(|(path, lock)| path.starts_with(&dir) && Arc::strong_count(lock) > 1)
            };
            let modified = entry.metadata().await.and_then(|m| m.modified()).unwrap_or(now);
            if busy || now.duration_since(modified).unwrap_or_default() < min_age {
                continue;
            }
            tokio::fs::remove_dir_all(&dir).await.map_err(io_at(&dir))?;
            self.locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .retain(|path, _| !path.starts_with(&dir));
            tracing::info!(%image, "evicted an image no instance on this host uses from the cache");
            removed.push(image);
        }
        Ok(removed)
    }

    async fn download(&self, image: &ImageId, file: &ImageFileRef, path: &Path) -> Result<(), ImageCacheError> {
        let dir = path.parent().unwrap_or(&self.root);
        tokio::fs::create_dir_all(dir).await.map_err(io_at(dir))?;
        let tmp = dir.join(format!(".{}.partial", file.role.as_str()));
        let result = self.download_to(image, file, &tmp).await;
        match result {
            Ok(()) => tokio::fs::rename(&tmp, path).await.map_err(io_at(path)),
            Err(err) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(err)
            }
        }
    }

    async fn download_to(&self, image: &ImageId, file: &ImageFileRef, tmp: &Path) -> Result<(), ImageCacheError> {
        let role = file.role;
        let mut body = self.fetcher.fetch(image, role).await.map_err(|source| ImageCacheError::Fetch {
            image: image.clone(),
            role,
            source,
        })?;
        let mut out = tokio::fs::File::create(tmp).await.map_err(io_at(tmp))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| ImageCacheError::Interrupted { image: image.clone(), role, source })?;
            size += chunk.len() as u64;
            if size > file.size_bytes {
                // Stop at once rather than filling the disk with a runaway download.
                return Err(ImageCacheError::SizeMismatch {
                    image: image.clone(),
                    role,
                    expected: file.size_bytes,
                    actual: size,
                });
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(io_at(tmp))?;
        }
        if size != file.size_bytes {
            return Err(ImageCacheError::SizeMismatch {
                image: image.clone(),
                role,
                expected: file.size_bytes,
                actual: size,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(&file.sha256) {
            return Err(ImageCacheError::ChecksumMismatch {
                image: image.clone(),
                role,
                expected: file.sha256.clone(),
                actual,
            });
        }
        out.sync_all().await.map_err(io_at(tmp))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Serves fixed contents per role, counting fetches; `chunks` splits each body.
    #[derive(Default)]
    struct FakeFetcher {
        files: HashMap<ImageFileRole, Vec<u8>>,
        fail_midway: bool,
        delay: Option<Duration>,
        fetches: AtomicUsize,
    }

    #[async_trait]
    impl ImageFetcher for FakeFetcher {
        async fn fetch(&self, _image: &ImageId, role: ImageFileRole) -> Result<ByteStream, FetchError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            let Some(data) = self.files.get(&role) else {
                return Err("HTTP 404: no such file".into());
            };
            let mut parts: Vec<Result<Bytes, io::Error>> =
                data.chunks(3).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            if self.fail_midway {
                parts.truncate(1);
                parts.push(Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset")));
            }
            Ok(Box::pin(futures::stream::iter(parts)))
        }
    }

    fn file_ref(role: ImageFileRole, data: &[u8]) -> ImageFileRef {
        ImageFileRef { role, size_bytes: data.len() as u64, sha256: hex::encode(Sha256::digest(data)) }
    }

    fn cache_with(fetcher: FakeFetcher) -> (tempfile::TempDir, Arc<FakeFetcher>, ImageCache) {
        let dir = tempfile::tempdir().expect("tempdir");
        let fetcher = Arc::new(fetcher);
        let cache = ImageCache::new(dir.path().join("images"), fetcher.clone());
        (dir, fetcher, cache)
    }

    fn image() -> ImageId {
        "ami-0123456789abcdef0".parse().expect("valid id")
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn downloads_verifies_and_then_reuses_the_file() {
        let data = b"kernel bytes".to_vec();
        let fetcher = FakeFetcher { files: [(ImageFileRole::Kernel, data.clone())].into(), ..Default::default() };
        let (_dir, fetcher, cache) = cache_with(fetcher);
        let wanted = file_ref(ImageFileRole::Kernel, &data);
        let path = cache.ensure(&image(), &wanted).await.expect("first download");
        assert_eq!(std::fs::read(&path).expect("cached"), data);
        assert!(path.ends_with("ami-0123456789abcdef0/kernel"));
        assert_eq!(cache.ensure(&image(), &wanted).await.expect("cached"), path);
        assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(files_in(path.parent().expect("dir")), ["kernel"]);
    }

    #[tokio::test]
    async fn checksum_mismatch_is_an_error_and_leaves_nothing_behind() {
        let fetcher = FakeFetcher { files: [(ImageFileRole::Disk, b"evil".to_vec())].into(), ..Default::default() };
        let (_dir, _fetcher, cache) = cache_with(fetcher);
        let wanted = file_ref(ImageFileRole::Disk, b"good");
        let err = cache.ensure(&image(), &wanted).await.expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "image ami-0123456789abcdef0 disk: checksum mismatch: expected sha256 {}, got ",
                wanted.sha256
            )),
            "{msg}"
        );
        assert!(files_in(&cache.root.join(image().as_str())).is_empty());
    }

    #[tokio::test]
    async fn short_and_overlong_downloads_are_size_mismatches() {
        let fetcher = FakeFetcher { files: [(ImageFileRole::Disk, b"12345".to_vec())].into(), ..Default::default() };
        let (_dir, _fetcher, cache) = cache_with(fetcher);
        let mut wanted = file_ref(ImageFileRole::Disk, b"12345");
        wanted.size_bytes = 9;
        let err = cache.ensure(&image(), &wanted).await.expect_err("short");
        assert_eq!(err.to_string(), "image ami-0123456789abcdef0 disk: size mismatch: expected 9 bytes, got 5");
        wanted.size_bytes = 2;
        let err = cache.ensure(&image(), &wanted).await.expect_err("long");
        assert!(matches!(err, ImageCacheError::SizeMismatch { expected: 2, actual: 3, .. }), "{err}");
        assert!(files_in(&cache.root.join(image().as_str())).is_empty());
    }

    #[tokio::test]
    async fn fetch_failures_and_cut_off_downloads_are_reported() {
        let fetcher = FakeFetcher {
            files: [(ImageFileRole::Kernel, b"abcdefgh".to_vec())].into(),
            fail_midway: true,
            ..Default::default()
        };
        let (_dir, _fetcher, cache) = cache_with(fetcher);
        let err = cache.ensure(&image(), &file_ref(ImageFileRole::Initrd, b"x")).await.expect_err("404");
        assert_eq!(err.to_string(), "image ami-0123456789abcdef0 initrd: download failed");
        assert_eq!(std::error::Error::source(&err).map(|s| s.to_string()).as_deref(), Some("HTTP 404: no such file"));
        let err = cache.ensure(&image(), &file_ref(ImageFileRole::Kernel, b"abcdefgh")).await.expect_err("cut");
        assert!(matches!(err, ImageCacheError::Interrupted { .. }), "{err}");
        assert!(files_in(&cache.root.join(image().as_str())).is_empty());
    }

    #[tokio::test]
    async fn concurrent_requests_download_once() {
        let data = vec![7u8; 1000];
        let fetcher = FakeFetcher {
            files: [(ImageFileRole::Initrd, data.clone())].into(),
            delay: Some(Duration::from_millis(50)),
            ..Default::default()
        };
        let (_dir, fetcher, cache) = cache_with(fetcher);
        let cache = Arc::new(cache);
        let wanted = file_ref(ImageFileRole::Initrd, &data);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, wanted) = (cache.clone(), wanted.clone());
                tokio::spawn(async move { cache.ensure(&image(), &wanted).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("ensure");
        }
        assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cached_file_of_the_wrong_size_is_downloaded_again() {
        let data = b"the real initrd".to_vec();
        let fetcher = FakeFetcher { files: [(ImageFileRole::Initrd, data.clone())].into(), ..Default::default() };
        let (_dir, fetcher, cache) = cache_with(fetcher);
        let path = cache.path(&image(), ImageFileRole::Initrd);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, b"trunc").expect("write");
        cache.ensure(&image(), &file_ref(ImageFileRole::Initrd, &data)).await.expect("ensure");
        assert_eq!(std::fs::read(&path).expect("read"), data);
        assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unused_images_are_evicted_and_kept_ones_stay() {
        let data = b"kernel bytes".to_vec();
        let (dir, _, cache) = cache_with(FakeFetcher {
            files: HashMap::from([(ImageFileRole::Kernel, data.clone())]),
            ..Default::default()
        });
        let other: ImageId = "ami-0000000000000000f".parse().expect("id");
        cache.ensure(&image(), &file_ref(ImageFileRole::Kernel, &data)).await.expect("fetch");
        cache.ensure(&other, &file_ref(ImageFileRole::Kernel, &data)).await.expect("fetch");
        let keep = std::collections::HashSet::from([image()]);
        assert!(cache.evict(&keep, Duration::from_secs(3600)).await.expect("evict").is_empty(), "too young");
        assert_eq!(cache.evict(&keep, Duration::ZERO).await.expect("evict"), vec![other.clone()]);
        assert_eq!(files_in(&dir.path().join("images")), vec![image().to_string()]);
    }
}
