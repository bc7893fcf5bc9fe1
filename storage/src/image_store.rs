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
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageStoreError + '_ {
    move |source| ImageStoreError::Io { path: path.to_owned(), source }
}

impl FsImageStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageStoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_at(&root))?;
        Ok(Self { root })
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
        mut body: S,
        max_bytes: u64,
    ) -> Result<StoredFile, ImageStoreError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Unpin,
    {
        let dir = self.root.join(image.as_str());
        tokio::fs::create_dir_all(&dir).await.map_err(io_at(&dir))?;
        let final_path = dir.join(role.as_str());
        let tmp_path = dir.join(format!(".{}.partial-{}", role.as_str(), std::process::id()));
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
            Ok(stored) => {
                tokio::fs::rename(&tmp_path, &final_path).await.map_err(io_at(&final_path))?;
                Ok(stored)
            }
            Err(err) => {
                let _ = tokio::fs::remove_file(&tmp_path).await;
                Err(err)
            }
        }
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
        let stored = store.put(&id, ImageFileRole::Kernel, chunks(vec![Ok(b"hello "), Ok(b"world")]), 100).await.unwrap();
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
        let left: Vec<_> = std::fs::read_dir(dir.path().join(id.as_str())).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(matches!(
            store.open_file(&id, ImageFileRole::Disk).await,
            Err(ImageStoreError::NotFound { .. })
        ));
        store.delete_image(&id).await.unwrap();
        store.delete_image(&id).await.unwrap();
        assert!(!dir.path().join(id.as_str()).exists());
    }
}
