//! Instance directories and root disks on a compute host.
//!
//! Each instance owns `<root>/<instance-id>/`, which holds its root disk
//! (`disk.qcow2`) and whatever else the agent keeps per instance (the console
//! log). A root disk is a qcow2 overlay on a cached image, or a blank qcow2 for
//! kernel+initrd images. Disks are written under a temporary name and renamed
//! into place, so a failed `qemu-img` never leaves a disk that looks finished.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kumo_wire::api::DiskFormat;
use kumo_wire::InstanceId;
use serde::Deserialize;

/// The file name of an instance's root disk inside its directory.
pub const ROOT_DISK_FILE: &str = "disk.qcow2";

const GIB: u64 = 1024 * 1024 * 1024;

/// The image a root disk is layered on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingImage {
    /// The cached image file (made absolute before it is written into the overlay).
    pub path: PathBuf,
    /// Its format, passed to qemu-img explicitly (never probed).
    pub format: DiskFormat,
}

/// Errors of instance disk handling.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// qemu-img could not be started.
    #[error("could not run qemu-img")]
    Spawn(#[source] io::Error),
    /// qemu-img ran and failed.
    #[error("qemu-img {action} failed: {stderr}")]
    QemuImg {
        /// What was asked of it (`create`, `info`).
        action: &'static str,
        /// What it printed on standard error.
        stderr: String,
    },
    /// qemu-img's JSON could not be read.
    #[error("could not read qemu-img info of {path}")]
    Info {
        /// The image.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The flavor's disk is smaller than the image it is built on.
    #[error("the requested root disk of {requested_gib} GiB is smaller than the image's virtual size of {image_bytes} bytes")]
    TooSmall {
        /// The flavor's disk size.
        requested_gib: u64,
        /// The base image's virtual size.
        image_bytes: u64,
    },
    /// A base image that points to a backing file of its own (which could be any host file).
    #[error("image file {path} has a backing file ({backing}); images must be self-contained")]
    BackingChain {
        /// The image.
        path: PathBuf,
        /// The backing file it names.
        backing: String,
    },
    /// A directory or file could not be read or written.
    #[error("instance disk I/O failed at {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io { path: path.to_owned(), source }
}

/// Per-instance directories and root disks.
#[async_trait]
pub trait InstanceDisks: Send + Sync + std::fmt::Debug {
    /// The instance's directory (whether or not it exists).
    fn instance_dir(&self, id: &InstanceId) -> PathBuf;

    /// The instance's root disk (whether or not it exists).
    fn root_disk(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join(ROOT_DISK_FILE)
    }

    /// Creates the root disk of `size_gib` GiB, on `backing` or blank, unless
    /// it exists already (an existing disk is never touched). Returns its path.
    async fn ensure_root_disk(
        &self,
        id: &InstanceId,
        backing: Option<&BackingImage>,
        size_gib: u64,
    ) -> Result<PathBuf, DiskError>;

    /// Removes the instance's directory with everything in it. `false` when it was not there.
    async fn remove(&self, id: &InstanceId) -> Result<bool, DiskError>;

    /// The instances that have a directory.
    async fn list(&self) -> Result<Vec<InstanceId>, DiskError>;
}

/// [`InstanceDisks`] on a local directory, with `qemu-img`.
#[derive(Debug, Clone)]
pub struct QemuImgDisks {
    root: PathBuf,
    qemu_img: PathBuf,
}

/// The part of `qemu-img info --output=json` we read.
#[derive(Debug, Deserialize)]
struct ImageInfo {
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
}

/// The longest one `qemu-img` run on an instance disk may take.
const QEMU_IMG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl QemuImgDisks {
    /// Instance directories under `root`, using `qemu-img` from `PATH`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), qemu_img: PathBuf::from("qemu-img") }
    }

    async fn run(&self, action: &'static str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, DiskError> {
        let run = tokio::process::Command::new(&self.qemu_img).args(args).kill_on_drop(true).output();
        // Creating an overlay or resizing is metadata work; a qemu-img stuck on a
        // dead mount must not hold the instance's task forever.
        let out = tokio::time::timeout(QEMU_IMG_TIMEOUT, run)
            .await
            .map_err(|_| DiskError::QemuImg {
                action,
                stderr: format!("qemu-img did not finish within {} s and was killed", QEMU_IMG_TIMEOUT.as_secs()),
            })?
            .map_err(DiskError::Spawn)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(DiskError::QemuImg { action, stderr })
        }
    }

    async fn info(&self, image: &BackingImage) -> Result<ImageInfo, DiskError> {
        // `-U`: the base may be open read-only by running guests.
        let json = self
            .run(
                "info",
                &[
                    "info".as_ref(),
                    "-U".as_ref(),
                    "--output=json".as_ref(),
                    "-f".as_ref(),
                    image.format.as_str().as_ref(),
                    image.path.as_os_str(),
                ],
            )
            .await?;
        serde_json::from_slice(&json).map_err(|source| DiskError::Info { path: image.path.clone(), source })
    }
}

#[async_trait]
impl InstanceDisks for QemuImgDisks {
    fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.root.join(id.as_str())
    }

    async fn ensure_root_disk(
        &self,
        id: &InstanceId,
        backing: Option<&BackingImage>,
        size_gib: u64,
    ) -> Result<PathBuf, DiskError> {
        let disk = self.root_disk(id);
        match tokio::fs::metadata(&disk).await {
            Ok(_) => return Ok(disk),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&disk)(e)),
        }
        let dir = self.instance_dir(id);
        tokio::fs::create_dir_all(&dir).await.map_err(io_at(&dir))?;
        let tmp = dir.join(format!("{ROOT_DISK_FILE}.partial"));
        let size = format!("{}", size_gib.saturating_mul(GIB));
        let mut args: Vec<std::ffi::OsString> = vec!["create".into(), "-q".into(), "-f".into(), "qcow2".into()];
        if let Some(base) = backing {
            let base =
                BackingImage { path: std::path::absolute(&base.path).map_err(io_at(&base.path))?, format: base.format };
            let info = self.info(&base).await?;
            if let Some(backing) = info.backing_filename {
                return Err(DiskError::BackingChain { path: base.path, backing });
            }
            if info.virtual_size > size_gib.saturating_mul(GIB) {
                return Err(DiskError::TooSmall { requested_gib: size_gib, image_bytes: info.virtual_size });
            }
            args.extend(["-F".into(), base.format.as_str().into(), "-b".into(), base.path.into_os_string()]);
        }
        args.extend([tmp.clone().into_os_string(), size.into()]);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        if let Err(err) = self.run("create", &args).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(err);
        }
        tokio::fs::rename(&tmp, &disk).await.map_err(io_at(&disk))?;
        tracing::info!(instance = %id, disk = %disk.display(), size_gib,
            backing = ?backing.map(|b| b.path.display().to_string()), "root disk created");
        Ok(disk)
    }

    async fn remove(&self, id: &InstanceId) -> Result<bool, DiskError> {
        let dir = self.instance_dir(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_at(&dir)(e)),
        }
    }

    async fn list(&self) -> Result<Vec<InstanceId>, DiskError> {
        let mut entries = match tokio::fs::read_dir(&self.root).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&self.root)(e)),
        };
        let mut ids = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_at(&self.root))? {
            let is_dir = entry.file_type().await.map(|t| t.is_dir()).unwrap_or(false);
            match entry.file_name().to_str().map(str::parse::<InstanceId>) {
                Some(Ok(id)) if is_dir => ids.push(id),
                _ => {
                    tracing::debug!(entry = %entry.path().display(), "ignoring a foreign entry in the instances directory")
                }
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> InstanceId {
        format!("i-{:017x}", n).parse().expect("valid id")
    }

    fn qemu_img_info(path: &Path) -> serde_json::Value {
        let out = std::process::Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(path)
            .output()
            .expect("qemu-img runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn make_base(dir: &Path, format: &str, size: &str) -> PathBuf {
        let path = dir.join(format!("base.{format}"));
        let status = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", format])
            .arg(&path)
            .arg(size)
            .status()
            .expect("qemu-img runs");
        assert!(status.success());
        path
    }

    #[tokio::test]
    async fn overlay_points_at_the_base_and_has_the_flavor_size() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = make_base(tmp.path(), "qcow2", "1G");
        let disks = QemuImgDisks::new(tmp.path().join("instances"));
        let backing = BackingImage { path: base.clone(), format: DiskFormat::Qcow2 };
        let disk = disks.ensure_root_disk(&id(1), Some(&backing), 3).await.expect("create");
        assert_eq!(disk, tmp.path().join("instances").join(id(1).as_str()).join("disk.qcow2"));
        let info = qemu_img_info(&disk);
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["virtual-size"], 3 * GIB);
        assert_eq!(info["backing-filename"], base.to_str().expect("utf-8"));
        assert_eq!(info["backing-filename-format"], "qcow2");
        assert_eq!(disks.list().await.expect("list"), vec![id(1)]);
    }

    #[tokio::test]
    async fn raw_base_images_get_a_qcow2_overlay_with_raw_backing_format() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = make_base(tmp.path(), "raw", "1M");
        let disks = QemuImgDisks::new(tmp.path().join("instances"));
        let backing = BackingImage { path: base, format: DiskFormat::Raw };
        let disk = disks.ensure_root_disk(&id(2), Some(&backing), 1).await.expect("create");
        assert_eq!(qemu_img_info(&disk)["backing-filename-format"], "raw");
    }

    #[tokio::test]
    async fn kernel_images_get_a_blank_disk_and_an_existing_disk_is_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let disks = QemuImgDisks::new(tmp.path());
        let disk = disks.ensure_root_disk(&id(3), None, 2).await.expect("create");
        let info = qemu_img_info(&disk);
        assert_eq!(info["virtual-size"], 2 * GIB);
        assert!(info.get("backing-filename").is_none());
        // A second call with another size leaves the existing disk alone.
        disks.ensure_root_disk(&id(3), None, 5).await.expect("exists");
        assert_eq!(qemu_img_info(&disk)["virtual-size"], 2 * GIB);
    }

    #[tokio::test]
    async fn a_disk_smaller_than_the_image_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = make_base(tmp.path(), "qcow2", "2G");
        let disks = QemuImgDisks::new(tmp.path().join("instances"));
        let backing = BackingImage { path: base, format: DiskFormat::Qcow2 };
        let err = disks.ensure_root_disk(&id(4), Some(&backing), 1).await.expect_err("too small");
        assert_eq!(
            err.to_string(),
            "the requested root disk of 1 GiB is smaller than the image's virtual size of 2147483648 bytes"
        );
        assert!(!disks.root_disk(&id(4)).exists());
    }

    #[tokio::test]
    async fn base_images_with_their_own_backing_file_or_wrong_format_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let inner = make_base(tmp.path(), "raw", "1M");
        let chained = tmp.path().join("chained.qcow2");
        let status = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&inner)
            .arg(&chained)
            .status()
            .expect("qemu-img");
        assert!(status.success());
        let disks = QemuImgDisks::new(tmp.path().join("instances"));
        let backing = BackingImage { path: chained, format: DiskFormat::Qcow2 };
        let err = disks.ensure_root_disk(&id(5), Some(&backing), 1).await.expect_err("chained");
        assert!(matches!(err, DiskError::BackingChain { .. }), "{err}");

        let raw_as_qcow2 = BackingImage { path: inner, format: DiskFormat::Qcow2 };
        let err = disks.ensure_root_disk(&id(5), Some(&raw_as_qcow2), 1).await.expect_err("format");
        assert!(matches!(err, DiskError::QemuImg { action: "info", .. }), "{err}");
        assert!(!disks.root_disk(&id(5)).exists());
    }

    #[tokio::test]
    async fn remove_deletes_the_directory_and_list_ignores_foreign_entries() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let disks = QemuImgDisks::new(tmp.path());
        disks.ensure_root_disk(&id(6), None, 1).await.expect("create");
        std::fs::write(disks.instance_dir(&id(6)).join("console.log"), b"boot").expect("log");
        std::fs::create_dir(tmp.path().join("lost+found")).expect("mkdir");
        std::fs::write(tmp.path().join(id(7).as_str()), b"a file, not a dir").expect("file");
        assert_eq!(disks.list().await.expect("list"), vec![id(6)]);
        assert!(disks.remove(&id(6)).await.expect("remove"));
        assert!(!disks.instance_dir(&id(6)).exists());
        assert!(!disks.remove(&id(6)).await.expect("again"));
        assert!(disks.list().await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_missing_base_file_is_a_qemu_img_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let disks = QemuImgDisks::new(tmp.path());
        let backing = BackingImage { path: tmp.path().join("nope.qcow2"), format: DiskFormat::Qcow2 };
        let err = disks.ensure_root_disk(&id(8), Some(&backing), 1).await.expect_err("missing");
        assert!(err.to_string().starts_with("qemu-img info failed: "), "{err}");
    }
}
