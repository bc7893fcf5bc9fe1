//! The image store every controller replica serves.
//!
//! Files are staged and kept in a local [`FsImageStore`] (`image_dir`);
//! where the other copies are is behind the [`FileCopies`] trait:
//!
//! - [`SharedDirectory`]: every replica uses the same directory (NFS), so
//!   there is nothing to track.
//! - [`Replicated`]: each replica keeps copies in its own directory. Every
//!   stored file's copies are recorded in the database with their checksum
//!   (`image_file_copies`); a replica asked for a file it lacks fetches it
//!   from a replica that has it (`GET /replica/v1/images/{id}/files/{role}`,
//!   authenticated with a token shared through the database, sealed), checks
//!   the checksum against `image_files`, keeps the copy and serves it. A
//!   worker brings every file to `image_copies` copies on live replicas; each
//!   replica's store sweep deletes its copies of images the database no longer has.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use kumo_storage::{FsImageStore, ImageStoreError, Staged, StoredFile};
use kumo_wire::api::ImageFileRole;
use kumo_wire::ImageId;

use crate::config::{ControllerConfig, ImageStoreKind};
use crate::db::{Db, DbError};
use crate::error::ApiError;

/// The path replicas fetch each other's files at.
pub const PEER_PATH: &str = "/replica/v1/images/{id}/files/{role}";

/// How long a replica may be silent before its copies no longer count.
pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageFilesError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] ImageStoreError),
    /// The database failed.
    #[error("image store bookkeeping")]
    Db(#[from] DbError),
    /// No replica could give a copy whose checksum matches the database.
    #[error("image file {image}/{role} is on no reachable replica with a good copy ({tried} tried)")]
    NoGoodCopy {
        /// The image.
        image: ImageId,
        /// The file's role.
        role: &'static str,
        /// Replicas asked.
        tried: usize,
    },
    /// Setting the store up failed.
    #[error("image store set-up: {0}")]
    Setup(String),
}

impl From<ImageFilesError> for ApiError {
    fn from(e: ImageFilesError) -> Self {
        match e {
            ImageFilesError::Store(e) => e.into(),
            ImageFilesError::Db(e) => e.into(),
            e @ ImageFilesError::NoGoodCopy { .. } => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(crate::error::anyhow_chain(&other)),
        }
    }
}

/// Where the copies of image files are, and how a replica gets one it lacks.
#[async_trait::async_trait]
pub trait FileCopies: Send + Sync + std::fmt::Debug {
    /// A file was put in place in this replica's store.
    async fn stored(&self, image: &ImageId, role: ImageFileRole, file: &StoredFile) -> Result<(), ImageFilesError>;
    /// A local file of `from` was copied to `to` (same bytes).
    async fn copied(&self, from: &ImageId, to: &ImageId, role: ImageFileRole, size: u64)
        -> Result<(), ImageFilesError>;
    /// Makes sure `local` holds the current version of a file (the one whose
    /// checksum the database records), fetching it from another replica when not.
    async fn ensure_local(
        &self,
        local: &FsImageStore,
        image: &ImageId,
        role: ImageFileRole,
    ) -> Result<(), ImageFilesError>;
    /// The image is gone from the database: its copies are no longer wanted.
    async fn forget(&self, image: &ImageId) -> Result<(), ImageFilesError>;
    /// The token other replicas present to fetch files here (none: not served).
    fn peer_token(&self) -> Option<&str>;
    /// One pass of background work (heartbeat, bringing files to their copies); files fetched.
    async fn maintain(&self, local: &FsImageStore) -> Result<usize, ImageFilesError>;
}

/// Every replica reads and writes one directory: nothing to track.
#[derive(Debug, Default)]
pub struct SharedDirectory;

#[async_trait::async_trait]
impl FileCopies for SharedDirectory {
    async fn stored(&self, _: &ImageId, _: ImageFileRole, _: &StoredFile) -> Result<(), ImageFilesError> {
        Ok(())
    }
    async fn copied(&self, _: &ImageId, _: &ImageId, _: ImageFileRole, _: u64) -> Result<(), ImageFilesError> {
        Ok(())
    }
    async fn ensure_local(&self, _: &FsImageStore, _: &ImageId, _: ImageFileRole) -> Result<(), ImageFilesError> {
        Ok(())
    }
    async fn forget(&self, _: &ImageId) -> Result<(), ImageFilesError> {
        Ok(())
    }
    fn peer_token(&self) -> Option<&str> {
        None
    }
    async fn maintain(&self, _: &FsImageStore) -> Result<usize, ImageFilesError> {
        Ok(0)
    }
}

type FileKey = (ImageId, ImageFileRole);

/// Copies on every replica, recorded in the database, fetched on demand.
pub struct Replicated {
    db: Db,
    me: String,
    url: String,
    copies: u32,
    token: String,
    http: reqwest::Client,
    /// One fetch per file at a time in this process.
    fetching: Mutex<HashMap<FileKey, Arc<tokio::sync::Mutex<()>>>>,
    /// The replicas this one has noticed are gone (each is logged once, until it comes back).
    gone: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Replicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicated").field("me", &self.me).field("url", &self.url).finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    kumo_wire::Timestamp::now().0
}

const TOKEN_SETTING: &str = "replica_peer_token";

impl Replicated {
    /// Joins the replicas: reads (or creates) this replica's id in
    /// `<data_dir>/replica-id`, the shared peer token, and says it is alive.
    pub async fn join(
        db: &Db,
        sealer: &crate::sealing::Sealer,
        config: &ControllerConfig,
    ) -> Result<Self, ImageFilesError> {
        let url = config.replica_url.clone().ok_or_else(|| ImageFilesError::Setup("replica_url is not set".into()))?;
        let id_file = config.data_dir.join("replica-id");
        let me = match std::fs::read_to_string(&id_file) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => {
                let id = format!("replica-{}", &crate::auth::random_secret()[..16]);
                std::fs::write(&id_file, &id)
                    .map_err(|e| ImageFilesError::Setup(format!("cannot write {}: {e}", id_file.display())))?;
                id
            }
        };
        let aad = format!("settings.{TOKEN_SETTING}");
        let seal_err = |e: crate::sealing::SealError| ImageFilesError::Setup(e.to_string());
        let fresh = sealer.seal(&aad, &crate::auth::random_secret()).map_err(seal_err)?;
        let stored = db.setting_or_insert(TOKEN_SETTING, &fresh).await?;
        let token = sealer.unseal(&aad, &stored).map_err(seal_err)?;
        // No overall timeout: a large image takes a while; a stalled peer does not.
        let http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).read_timeout(Duration::from_secs(60));
        let http = match &config.replica_ca_file {
            Some(ca) => crate::tls::trusting(http, ca).map_err(|e| ImageFilesError::Setup(e.to_string()))?,
            None => http,
        };
        let http = http.build().map_err(|e| ImageFilesError::Setup(e.to_string()))?;
        db.replica_alive(&me, &url, now_ms()).await?;
        Ok(Self {
            db: db.clone(),
            me,
            url,
            copies: config.image_copies,
            token,
            http,
            fetching: Mutex::default(),
            gone: Mutex::default(),
        })
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// Notices the replicas that stopped heartbeating (logged once each, and
    /// once more when one comes back); returns them.
    pub async fn notice_gone(&self, alive_since_ms: i64) -> Result<Vec<String>, ImageFilesError> {
        let gone = self.db.gone_replicas(alive_since_ms).await?;
        let ids: std::collections::HashSet<String> = gone.iter().map(|g| g.replica_id.clone()).collect();
        let mut known = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        for g in gone.iter().filter(|g| !known.contains(&g.replica_id)) {
            let silent_s = (now_ms() - g.last_seen_ms) / 1000;
            tracing::warn!(
                replica = %g.replica_id,
                url = %g.url,
                silent_s,
                "a controller replica is gone: its image file copies no longer count; copying them again from the others"
            );
        }
        for back in known.difference(&ids) {
            tracing::info!(replica = %back, "a controller replica is back");
        }
        *known = ids;
        let mut out: Vec<String> = known.iter().cloned().collect();
        out.sort();
        Ok(out)
    }

    fn lock_of(&self, key: FileKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key).or_default().clone()
    }

    /// Fetches one file from `peer` into `local`, refusing it unless its
    /// size and checksum are the expected ones.
    async fn fetch_from(
        &self,
        local: &FsImageStore,
        peer: &crate::db::replicas::PeerCopy,
        image: &ImageId,
        role: ImageFileRole,
        sha256: &str,
        size: u64,
    ) -> Result<(), String> {
        let url = format!("{}/replica/v1/images/{}/files/{}", peer.url.trim_end_matches('/'), image, role.as_str());
        let resp = self.http.get(&url).bearer_auth(&self.token).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered {}", resp.status()));
        }
        let body = resp.bytes_stream().map_err(std::io::Error::other);
        let staged = local.stage(image, role, body, size).await.map_err(|e| format!("{url}: {e}"))?;
        if staged.stored.sha256 != sha256 || staged.stored.size_bytes != size {
            let got = staged.stored.clone();
            local.discard(staged).await;
            return Err(format!(
                "{url} gave a bad copy: {} bytes with sha256 {}, expected {size} bytes with sha256 {sha256}",
                got.size_bytes, got.sha256
            ));
        }
        local.commit(staged).await.map_err(|e| e.to_string())
    }

    /// Whether the local file's checksum is `sha256` (an unrecorded local
    /// file: left by an older version, or a copy whose record was dropped).
    async fn local_matches(local: &FsImageStore, image: &ImageId, role: ImageFileRole, sha256: &str) -> bool {
        use sha2::Digest;
        use tokio::io::AsyncReadExt;
        let Ok((mut file, _)) = local.open_file(image, role).await else { return false };
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(_) => return false,
            }
        }
        hex::encode(hasher.finalize()) == sha256
    }
}

#[async_trait::async_trait]
impl FileCopies for Replicated {
    async fn stored(&self, image: &ImageId, role: ImageFileRole, file: &StoredFile) -> Result<(), ImageFilesError> {
        self.db.record_copy(image, role, &self.me, &file.sha256, file.size_bytes, now_ms()).await?;
        Ok(())
    }

    async fn copied(
        &self,
        from: &ImageId,
        to: &ImageId,
        role: ImageFileRole,
        size: u64,
    ) -> Result<(), ImageFilesError> {
        if let Some(sha256) = self.db.copy_on(from, role, &self.me).await? {
            self.db.record_copy(to, role, &self.me, &sha256, size, now_ms()).await?;
        }
        Ok(())
    }

    async fn ensure_local(
        &self,
        local: &FsImageStore,
        image: &ImageId,
        role: ImageFileRole,
    ) -> Result<(), ImageFilesError> {
        // Not uploaded yet (or an upload in progress): only a local file can serve.
        let Some((sha256, size)) = self.db.expected_file(image, role).await? else { return Ok(()) };
        let lock = self.lock_of((image.clone(), role));
        let _fetching = lock.lock().await;
        let present = local.open_file(image, role).await.is_ok();
        match self.db.copy_on(image, role, &self.me).await? {
            Some(mine) if present && mine == sha256 => return Ok(()),
            None if present && Self::local_matches(local, image, role, &sha256).await => {
                self.db.record_copy(image, role, &self.me, &sha256, size, now_ms()).await?;
                return Ok(());
            }
            _ => {}
        }
        let peers = self.db.peer_copies(image, role, &sha256, &self.me).await?;
        for peer in &peers {
            match self.fetch_from(local, peer, image, role, &sha256, size).await {
                Ok(()) => {
                    self.db.record_copy(image, role, &self.me, &sha256, size, now_ms()).await?;
                    tracing::info!(%image, role = role.as_str(), from = %peer.replica_id, bytes = size, "fetched an image file from a replica");
                    return Ok(());
                }
                Err(why) => {
                    tracing::warn!(%image, role = role.as_str(), replica = %peer.replica_id, "image file copy refused: {why}");
                }
            }
        }
        Err(ImageFilesError::NoGoodCopy { image: image.clone(), role: role.as_str(), tried: peers.len() })
    }

    async fn forget(&self, image: &ImageId) -> Result<(), ImageFilesError> {
        self.db.forget_copies(image).await?;
        Ok(())
    }

    fn peer_token(&self) -> Option<&str> {
        Some(&self.token)
    }

    async fn maintain(&self, local: &FsImageStore) -> Result<usize, ImageFilesError> {
        let now = now_ms();
        self.db.replica_alive(&self.me, &self.url, now).await?;
        let alive_since = now - i64::try_from(REPLICA_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
        self.notice_gone(alive_since).await?;
        let mut fetched = 0;
        for (image, role) in self.db.under_replicated(&self.me, self.copies, alive_since, 8).await? {
            // Claimed first, so replicas running this at once never copy a file beyond `copies`.
            if !self.db.claim_copy(&image, role, &self.me, self.copies, alive_since, now).await? {
                continue;
            }
            let copied = self.ensure_local(local, &image, role).await;
            self.db.release_copy_claim(&image, role, &self.me).await?;
            match copied {
                Ok(()) => fetched += 1,
                Err(e) => tracing::warn!(%image, role = role.as_str(), "cannot replicate: {e}"),
            }
        }
        Ok(fetched)
    }
}

/// The image store of this replica: a local directory and where the other copies are.
#[derive(Debug, Clone)]
pub struct ImageFiles {
    local: FsImageStore,
    copies: Arc<dyn FileCopies>,
}

impl ImageFiles {
    /// Opens the store `config` describes.
    pub async fn open(
        config: &ControllerConfig,
        db: &Db,
        sealer: &crate::sealing::Sealer,
    ) -> Result<Self, ImageFilesError> {
        let local = FsImageStore::open(config.image_dir())?;
        let copies: Arc<dyn FileCopies> = match config.image_store {
            ImageStoreKind::Directory => Arc::new(SharedDirectory),
            ImageStoreKind::Replicated => Arc::new(Replicated::join(db, sealer, config).await?),
        };
        Ok(Self { local, copies })
    }

    /// A store in one directory (see [`SharedDirectory`]).
    pub fn directory(root: impl Into<std::path::PathBuf>) -> Result<Self, ImageStoreError> {
        Ok(Self { local: FsImageStore::open(root)?, copies: Arc::new(SharedDirectory) })
    }

    /// The local directory store.
    pub fn local(&self) -> &FsImageStore {
        &self.local
    }

    /// Where this replica keeps a file.
    pub fn file_path(&self, image: &ImageId, role: ImageFileRole) -> std::path::PathBuf {
        self.local.file_path(image, role)
    }

    /// Streams `body` to a staged local file (see [`FsImageStore::stage`]).
    pub async fn stage<S>(
        &self,
        image: &ImageId,
        role: ImageFileRole,
        body: S,
        max_bytes: u64,
    ) -> Result<Staged, ImageStoreError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        self.local.stage(image, role, body, max_bytes).await
    }

    /// Puts a staged file in place and records this replica's copy.
    pub async fn commit(&self, staged: Staged) -> Result<(), ImageFilesError> {
        let (image, role, stored) = (staged.image.clone(), staged.role, staged.stored.clone());
        self.local.commit(staged).await?;
        self.copies.stored(&image, role, &stored).await
    }

    /// Drops a staged file.
    pub async fn discard(&self, staged: Staged) {
        self.local.discard(staged).await;
    }

    /// Copies a file of one image to another (fetching the source first if
    /// this replica lacks it) and records the copy.
    pub async fn copy_file(&self, from: &ImageId, to: &ImageId, role: ImageFileRole) -> Result<u64, ImageFilesError> {
        self.copies.ensure_local(&self.local, from, role).await?;
        let size = self.local.copy_file(from, to, role).await?;
        self.copies.copied(from, to, role, size).await?;
        Ok(size)
    }

    /// The images with a local directory (for the orphan sweep).
    pub async fn list(&self) -> Result<Vec<(ImageId, std::time::SystemTime)>, ImageStoreError> {
        self.local.list().await
    }

    /// Opens a file for serving, fetching it from another replica first when this one lacks it.
    pub async fn open_file(
        &self,
        image: &ImageId,
        role: ImageFileRole,
    ) -> Result<(tokio::fs::File, u64), ImageFilesError> {
        self.copies.ensure_local(&self.local, image, role).await?;
        Ok(self.local.open_file(image, role).await?)
    }

    /// Opens this replica's own copy (what other replicas fetch): never fetches.
    pub async fn open_local(
        &self,
        image: &ImageId,
        role: ImageFileRole,
    ) -> Result<(tokio::fs::File, u64), ImageStoreError> {
        self.local.open_file(image, role).await
    }

    /// Removes this replica's files of an image and forgets every copy (the
    /// database no longer has the image; the other replicas' sweeps delete theirs).
    pub async fn delete_image(&self, image: &ImageId) -> Result<(), ImageFilesError> {
        self.local.delete_image(image).await?;
        self.copies.forget(image).await
    }

    /// The token replicas fetch files from each other with, if they do.
    pub fn peer_token(&self) -> Option<&str> {
        self.copies.peer_token()
    }

    /// One pass of the replication worker; files fetched.
    pub async fn maintain(&self) -> Result<usize, ImageFilesError> {
        self.copies.maintain(&self.local).await
    }
}
