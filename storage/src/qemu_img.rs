//! Running `qemu-img`: one place that spawns it, bounds its run time and turns
//! its failures into errors that quote what it printed.
//!
//! Formats are always passed explicitly (`-f`): an image's format is never
//! probed from its content, which a guest or an uploader controls.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Errors of a `qemu-img` run.
#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    /// qemu-img could not be started.
    #[error("could not run qemu-img")]
    Spawn(#[source] io::Error),
    /// It ran longer than allowed and was killed.
    #[error("qemu-img {action} took longer than {secs}s and was stopped")]
    Timeout {
        /// What was asked of it.
        action: &'static str,
        /// The limit.
        secs: u64,
    },
    /// It ran and failed.
    #[error("qemu-img {action} failed: {stderr}")]
    Failed {
        /// What was asked of it (`create`, `info`, `convert`, ...).
        action: &'static str,
        /// Its exit code, if it exited.
        code: Option<i32>,
        /// What it printed on standard error.
        stderr: String,
    },
    /// Its JSON could not be read.
    #[error("could not read the output of qemu-img {action}")]
    Json {
        /// What was asked of it.
        action: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Output of a finished run.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (0 unless `accept` allowed another).
    pub code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
}

/// Runs `qemu-img ARGS` for at most `timeout`; exit codes in `accept` (and 0) are success.
pub async fn run(
    action: &'static str,
    args: &[&OsStr],
    timeout: Duration,
    accept: &[i32],
) -> Result<Finished, QemuImgError> {
    let child = tokio::process::Command::new("qemu-img")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(timeout, child).await {
        Ok(out) => out.map_err(QemuImgError::Spawn)?,
        Err(_) => return Err(QemuImgError::Timeout { action, secs: timeout.as_secs() }),
    };
    let code = out.status.code();
    match code {
        Some(c) if c == 0 || accept.contains(&c) => Ok(Finished { code: c, stdout: out.stdout }),
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            let stderr =
                if stderr.is_empty() { String::from_utf8_lossy(&out.stdout).trim().to_owned() } else { stderr };
            Err(QemuImgError::Failed { action, code, stderr })
        }
    }
}

/// The part of `qemu-img info --output=json` Kumo reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Info {
    /// The format qemu-img opened the file as.
    pub format: String,
    /// The guest-visible size.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// A backing file the image names, if any.
    #[serde(rename = "backing-filename")]
    pub backing_filename: Option<String>,
    /// Whether the image is encrypted.
    #[serde(default)]
    pub encrypted: bool,
    /// Format-specific details (qcow2: its external data file, if any).
    #[serde(rename = "format-specific")]
    pub format_specific: Option<FormatSpecific>,
}

/// `format-specific` of `qemu-img info`.
#[derive(Debug, Clone, Deserialize)]
pub struct FormatSpecific {
    /// The format-specific fields.
    pub data: Option<FormatData>,
}

/// The qcow2 fields Kumo reads.
#[derive(Debug, Clone, Deserialize)]
pub struct FormatData {
    /// An external data file that holds the guest data.
    #[serde(rename = "data-file")]
    pub data_file: Option<String>,
}

impl Info {
    /// The external data file, if the image has one.
    pub fn data_file(&self) -> Option<&str> {
        self.format_specific.as_ref()?.data.as_ref()?.data_file.as_deref()
    }
}

/// How long metadata operations may take.
pub const QUICK: Duration = Duration::from_secs(60);
/// How long copies may take.
pub const COPY: Duration = Duration::from_secs(3600);

/// `qemu-img info -U --output=json -f FORMAT PATH` (never follows a backing chain).
pub async fn info(path: &Path, format: &str) -> Result<Info, QemuImgError> {
    let out = run(
        "info",
        &["info".as_ref(), "-U".as_ref(), "--output=json".as_ref(), "-f".as_ref(), format.as_ref(), path.as_os_str()],
        QUICK,
        &[],
    )
    .await?;
    serde_json::from_slice(&out.stdout).map_err(|source| QemuImgError::Json { action: "info", source })
}

/// `qemu-img create -f qcow2 PATH SIZE`.
pub async fn create_qcow2(path: &Path, size_bytes: u64) -> Result<(), QemuImgError> {
    let size = size_bytes.to_string();
    run(
        "create",
        &["create".as_ref(), "-q".as_ref(), "-f".as_ref(), "qcow2".as_ref(), path.as_os_str(), size.as_ref()],
        QUICK,
        &[],
    )
    .await
    .map(drop)
}

/// `qemu-img convert -f FORMAT -O qcow2 SRC DST`: a standalone copy, its
/// backing chain (if any) flattened into it.
pub async fn convert_to_qcow2(src: &Path, src_format: &str, dst: &Path) -> Result<(), QemuImgError> {
    run(
        "convert",
        &[
            "convert".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            src_format.as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            src.as_os_str(),
            dst.as_os_str(),
        ],
        COPY,
        &[],
    )
    .await
    .map(drop)
}

/// `qemu-img resize -f qcow2 PATH SIZE` (grow only).
pub async fn grow_qcow2(path: &Path, size_bytes: u64) -> Result<(), QemuImgError> {
    let size = size_bytes.to_string();
    run(
        "resize",
        &["resize".as_ref(), "-q".as_ref(), "-f".as_ref(), "qcow2".as_ref(), path.as_os_str(), size.as_ref()],
        QUICK,
        &[],
    )
    .await
    .map(drop)
}
