//! Running `qemu-img`: one place that spawns it, bounds its run time and turns
//! its failures into errors that quote what it printed.
//!
//! Every run is confined: it goes through `prlimit` (util-linux) with an
//! address-space cap ([`ADDRESS_SPACE`]) and a CPU-time cap (its timeout), and
//! at most [`MAX_CONCURRENT`] runs at once (the rest wait their turn), so a
//! crafted upload cannot make `qemu-img info`/`check` eat the host.
//!
//! Formats are always passed explicitly (`-f`): an image's format is never
//! probed from its content, which a guest or an uploader controls.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::sync::Semaphore;

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

/// The address space one qemu-img run may map (2 GiB: ample for metadata
/// work and copies, far below what a crafted image could ask for).
pub const ADDRESS_SPACE: u64 = 2 << 30;
/// How many qemu-img runs go at once; more wait their turn.
pub const MAX_CONCURRENT: usize = 4;

static RUNS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_CONCURRENT));

/// The resource limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `prlimit --as`: bytes of address space.
    pub address_space: u64,
    /// `prlimit --cpu`: seconds of CPU time (then SIGXCPU/SIGKILL).
    pub cpu_secs: u64,
}

impl Limits {
    /// The limits of a run allowed `timeout` of wall time: [`ADDRESS_SPACE`]
    /// and as many CPU seconds as wall seconds (at least one).
    pub fn for_timeout(timeout: Duration) -> Self {
        Self { address_space: ADDRESS_SPACE, cpu_secs: timeout.as_secs().max(1) }
    }
}

/// The command line of a confined run: `prlimit --as=N --cpu=S -- PROGRAM ARGS`.
pub fn command_line(program: &str, args: &[&OsStr], limits: Limits) -> Vec<OsString> {
    let mut line: Vec<OsString> = vec![
        "prlimit".into(),
        format!("--as={}", limits.address_space).into(),
        format!("--cpu={}", limits.cpu_secs).into(),
        "--".into(),
        program.into(),
    ];
    line.extend(args.iter().map(|a| a.to_os_string()));
    line
}

/// Runs `qemu-img ARGS` for at most `timeout` under [`Limits::for_timeout`];
/// exit codes in `accept` (and 0) are success.
pub async fn run(
    action: &'static str,
    args: &[&OsStr],
    timeout: Duration,
    accept: &[i32],
) -> Result<Finished, QemuImgError> {
    run_confined(&RUNS, "qemu-img", action, args, timeout, Limits::for_timeout(timeout), accept).await
}

/// Runs `program ARGS` under `limits` once `gate` gives a permit, for at most
/// `timeout` after it starts.
async fn run_confined(
    gate: &Semaphore,
    program: &str,
    action: &'static str,
    args: &[&OsStr],
    timeout: Duration,
    limits: Limits,
    accept: &[i32],
) -> Result<Finished, QemuImgError> {
    // The semaphore is never closed; a closed one would only mean "no bound".
    let _permit = gate.acquire().await.ok();
    let line = command_line(program, args, limits);
    let child = tokio::process::Command::new(&line[0])
        .args(&line[1..])
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 item 12: every qemu-img run carries its limits on the command line.
    #[test]
    fn runs_carry_address_space_and_cpu_limits() {
        let line = command_line("qemu-img", &["info".as_ref(), "x.qcow2".as_ref()], Limits::for_timeout(QUICK));
        let line: Vec<_> = line.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(line, ["prlimit", "--as=2147483648", "--cpu=60", "--", "qemu-img", "info", "x.qcow2"]);
    }

    /// The limits are real: a qemu-img confined to 16 MiB of address space
    /// cannot even start, and the error says it failed.
    #[tokio::test]
    async fn the_address_space_limit_is_enforced() {
        let gate = Semaphore::new(1);
        let tight = Limits { address_space: 16 << 20, cpu_secs: 5 };
        let err = run_confined(&gate, "qemu-img", "info", &["--version".as_ref()], QUICK, tight, &[])
            .await
            .expect_err("qemu-img ran in 16 MiB");
        assert!(matches!(err, QemuImgError::Failed { action: "info", .. }), "{err:?}");
        // The same run under the normal limits works.
        let ok =
            run_confined(&gate, "qemu-img", "info", &["--version".as_ref()], QUICK, Limits::for_timeout(QUICK), &[])
                .await
                .expect("qemu-img --version");
        assert!(String::from_utf8_lossy(&ok.stdout).contains("qemu-img version"));
    }

    /// Issue 12 item 12: no more runs at once than the gate allows. Each run
    /// marks itself in a directory, then counts the runs going.
    #[tokio::test]
    async fn runs_are_bounded_in_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let script =
            format!("touch {d}/run/$$; n=$(ls {d}/run | wc -l); echo $n >> {d}/seen; sleep 0.3; rm {d}/run/$$");
        std::fs::create_dir(dir.path().join("run")).expect("mkdir");
        let gate = Semaphore::new(2);
        let limits = Limits::for_timeout(QUICK);
        let args: [&OsStr; 2] = ["-c".as_ref(), script.as_ref()];
        let runs = (0..8).map(|_| run_confined(&gate, "sh", "check", &args, QUICK, limits, &[]));
        for r in futures::future::join_all(runs).await {
            r.expect("run");
        }
        let seen = std::fs::read_to_string(dir.path().join("seen")).expect("seen");
        let seen: Vec<usize> = seen.lines().map(|l| l.trim().parse().expect("count")).collect();
        assert_eq!(seen.len(), 8);
        assert!(seen.iter().all(|&n| (1..=2).contains(&n)), "more than 2 at once: {seen:?}");
    }
}
