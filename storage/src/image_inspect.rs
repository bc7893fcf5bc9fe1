//! Deciding whether an uploaded file is a disk image Kumo will serve.
//!
//! An uploaded image is hostile until proven otherwise: a qcow2 header can
//! name a backing file or an external data file anywhere on the host, and
//! anything that opens the image would then read that host file into a guest.
//! So the format is *sniffed from the header by this module* (never probed by
//! qemu-img, whose probing knows formats such as VMDK descriptors that also
//! name host files), the qcow2 header is checked for backing and data files
//! before any tool opens it, and only then `qemu-img info` and `qemu-img check`
//! run with an explicit format, as a second opinion.

use std::io;
use std::path::{Path, PathBuf};

use kumo_wire::api::DiskFormat;
use tokio::io::AsyncReadExt;

use crate::qemu_img::{self, QemuImgError};

/// The largest qcow2 cluster; header extensions live in the first cluster.
const HEADER_READ: usize = 2 * 1024 * 1024;
/// The qcow2 magic.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// qcow2 incompatible feature bit: an external data file holds the data.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// qcow2 header extension: the name of the external data file.
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// What an accepted image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspection {
    /// Its format (as declared, or detected when none was).
    pub format: DiskFormat,
    /// The guest-visible size in bytes.
    pub virtual_size: u64,
}

/// Why an upload is not accepted as a disk image. The messages are for the uploader.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Nothing was uploaded.
    #[error("the file is empty")]
    Empty,
    /// The content is not an image of the expected format.
    #[error("the file is not a valid {expected} image: {detail}")]
    NotAnImage {
        /// The format it was expected to be.
        expected: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The content is a different format than the one declared.
    #[error("the file was declared {declared} but is a {found} image")]
    FormatMismatch {
        /// The declared format.
        declared: &'static str,
        /// The format found in its header.
        found: &'static str,
    },
    /// A format Kumo does not serve.
    #[error("the file is a {0} image; Kumo accepts qcow2 and raw (convert it with qemu-img convert -O qcow2)")]
    Unsupported(&'static str),
    /// A qcow2 image that names a backing file.
    #[error("the qcow2 image refers to a backing file ({0}); upload a self-contained image (qemu-img convert -O qcow2 IN OUT)")]
    BackingFile(String),
    /// A qcow2 image whose data lives in an external file.
    #[error("the qcow2 image keeps its data in an external data file ({0}); upload a self-contained image")]
    ExternalDataFile(String),
    /// An encrypted qcow2 image (no key could ever be given to boot it).
    #[error("the qcow2 image is encrypted; upload an unencrypted image")]
    Encrypted,
    /// A raw image whose size is not whole sectors.
    #[error("a raw image's size must be a multiple of 512 bytes, not {0}")]
    RawSize(u64),
    /// qemu-img could not be run or failed for a reason that is not the file's fault.
    #[error(transparent)]
    QemuImg(#[from] QemuImgError),
    /// The file could not be read.
    #[error("cannot read the uploaded file at {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl InspectError {
    /// Whether the error is the file's fault (a bad upload) rather than the host's.
    pub fn is_bad_image(&self) -> bool {
        !matches!(self, Self::QemuImg(QemuImgError::Spawn(_) | QemuImgError::Timeout { .. }) | Self::Io { .. })
    }
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    Qcow2,
    Other(&'static str),
    Raw,
}

fn sniff(head: &[u8]) -> Sniffed {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, QCOW2_MAGIC) {
        Sniffed::Qcow2
    } else if at(0, b"QFI") {
        Sniffed::Other("qcow (version 1)")
    } else if at(0, b"KDMV") || at(0, b"COWD") || at(0, b"# Disk DescriptorFile") {
        Sniffed::Other("vmdk")
    } else if at(0, b"conectix") {
        Sniffed::Other("vpc (vhd)")
    } else if at(0, b"vhdxfile") {
        Sniffed::Other("vhdx")
    } else if at(0x40, &[0x7f, 0x10, 0xda, 0xbe]) {
        Sniffed::Other("vdi")
    } else if at(0, b"QED\0") {
        Sniffed::Other("qed")
    } else if at(0, b"LUKS\xba\xbe") {
        Sniffed::Other("luks")
    } else {
        Sniffed::Raw
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn name_at(head: &[u8], offset: u64, len: u32) -> String {
    usize::try_from(offset)
        .ok()
        .and_then(|start| head.get(start..start.checked_add(len as usize)?))
        .map(|b| String::from_utf8_lossy(b).chars().take(200).collect())
        .unwrap_or_else(|| format!("a name at offset {offset}"))
}

/// Checks a qcow2 header for what must never be accepted; reads no other file.
fn check_qcow2_header(head: &[u8]) -> Result<(), InspectError> {
    let bad = |detail: &str| InspectError::NotAnImage { expected: "qcow2", detail: detail.to_owned() };
    let version = be32(head, 4).ok_or_else(|| bad("the header is cut short"))?;
    if !(2..=3).contains(&version) {
        return Err(bad(&format!("unknown qcow2 version {version}")));
    }
    let backing_offset = be64(head, 8).ok_or_else(|| bad("the header is cut short"))?;
    let backing_len = be32(head, 16).ok_or_else(|| bad("the header is cut short"))?;
    if backing_offset != 0 {
        return Err(InspectError::BackingFile(name_at(head, backing_offset, backing_len)));
    }
    if be32(head, 32).ok_or_else(|| bad("the header is cut short"))? != 0 {
        return Err(InspectError::Encrypted);
    }
    let header_len = if version == 2 {
        72
    } else {
        let incompatible = be64(head, 72).ok_or_else(|| bad("the header is cut short"))?;
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(InspectError::ExternalDataFile("flagged in the header".into()));
        }
        be32(head, 100).ok_or_else(|| bad("the header is cut short"))? as usize
    };
    // Header extensions: (type, length, data padded to 8 bytes) until type 0.
    let mut at = header_len;
    while let (Some(kind), Some(len)) = (be32(head, at), be32(head, at + 4)) {
        if kind == 0 {
            break;
        }
        if kind == EXT_DATA_FILE {
            return Err(InspectError::ExternalDataFile(name_at(head, (at + 8) as u64, len)));
        }
        at = at + 8 + (len as usize).div_ceil(8) * 8;
    }
    Ok(())
}

async fn read_head(path: &Path) -> Result<(Vec<u8>, u64), InspectError> {
    let io_err = |source| InspectError::Io { path: path.to_owned(), source };
    let mut file = tokio::fs::File::open(path).await.map_err(io_err)?;
    let len = file.metadata().await.map_err(io_err)?.len();
    let mut head = vec![0u8; HEADER_READ.min(usize::try_from(len).unwrap_or(HEADER_READ))];
    file.read_exact(&mut head).await.map_err(io_err)?;
    Ok((head, len))
}

/// Inspects the image at `path`, declared as `declared` (or undeclared: then
/// detected as qcow2 or raw). Reads the file; writes nothing.
pub async fn inspect(path: &Path, declared: Option<DiskFormat>) -> Result<Inspection, InspectError> {
    let (head, len) = read_head(path).await?;
    if len == 0 {
        return Err(InspectError::Empty);
    }
    let format = match (sniff(&head), declared) {
        (Sniffed::Other(found), Some(declared)) => {
            return Err(InspectError::FormatMismatch { declared: declared.as_str(), found })
        }
        (Sniffed::Other(found), None) => return Err(InspectError::Unsupported(found)),
        (Sniffed::Qcow2, Some(DiskFormat::Raw)) => {
            // A raw disk that starts with a qcow2 header is the classic trick to
            // make a later probe follow its backing file.
            return Err(InspectError::FormatMismatch { declared: "raw", found: "qcow2" });
        }
        (Sniffed::Raw, Some(DiskFormat::Qcow2)) => {
            return Err(InspectError::NotAnImage { expected: "qcow2", detail: "it has no qcow2 header".into() })
        }
        (Sniffed::Qcow2, _) => DiskFormat::Qcow2,
        (Sniffed::Raw, _) => DiskFormat::Raw,
    };
    match format {
        DiskFormat::Raw => {
            if len % 512 != 0 {
                return Err(InspectError::RawSize(len));
            }
            Ok(Inspection { format, virtual_size: len })
        }
        DiskFormat::Qcow2 => {
            check_qcow2_header(&head)?;
            let not_qcow2 = |e: QemuImgError| match e {
                QemuImgError::Failed { stderr, .. } => InspectError::NotAnImage { expected: "qcow2", detail: stderr },
                other => InspectError::QemuImg(other),
            };
            let info = qemu_img::info(path, "qcow2").await.map_err(not_qcow2)?;
            // A second opinion on what the header check already refused.
            if let Some(backing) = info.backing_filename.clone() {
                return Err(InspectError::BackingFile(backing));
            }
            if let Some(data_file) = info.data_file() {
                return Err(InspectError::ExternalDataFile(data_file.to_owned()));
            }
            if info.encrypted {
                return Err(InspectError::Encrypted);
            }
            // Exit 3: only leaked clusters, which waste space but harm nothing.
            qemu_img::run(
                "check",
                &["check".as_ref(), "-q".as_ref(), "-f".as_ref(), "qcow2".as_ref(), path.as_os_str()],
                qemu_img::COPY,
                &[3],
            )
            .await
            .map_err(not_qcow2)?;
            Ok(Inspection { format, virtual_size: info.virtual_size })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img").args(args).output().expect("qemu-img runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
        dir.path().join(name)
    }

    async fn check(p: &Path, declared: Option<DiskFormat>) -> String {
        match inspect(p, declared).await {
            Ok(i) => format!("ok {} {}", i.format.as_str(), i.virtual_size),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn good_images_are_accepted_with_their_virtual_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = path(&dir, "a.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().expect("utf-8"), "64M"]);
        assert_eq!(check(&q, Some(DiskFormat::Qcow2)).await, "ok qcow2 67108864");
        assert_eq!(check(&q, None).await, "ok qcow2 67108864");
        let r = path(&dir, "a.raw");
        std::fs::write(&r, vec![7u8; 4096]).expect("write");
        assert_eq!(check(&r, Some(DiskFormat::Raw)).await, "ok raw 4096");
        assert_eq!(check(&r, None).await, "ok raw 4096");
    }

    #[tokio::test]
    async fn bad_images_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = path(&dir, "notes.txt");
        std::fs::write(&text, b"hello, this is not a disk\n").expect("write");
        assert_eq!(
            check(&text, Some(DiskFormat::Qcow2)).await,
            "the file is not a valid qcow2 image: it has no qcow2 header"
        );
        assert_eq!(
            check(&text, Some(DiskFormat::Raw)).await,
            "a raw image's size must be a multiple of 512 bytes, not 26"
        );
        let empty = path(&dir, "empty");
        std::fs::write(&empty, b"").expect("write");
        assert_eq!(check(&empty, None).await, "the file is empty");

        // A qcow2 whose table offsets point nowhere: qemu-img refuses it.
        let broken_path = path(&dir, "broken.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", broken_path.to_str().expect("utf-8"), "1M"]);
        let mut broken = std::fs::read(&broken_path).expect("read");
        broken[40..56].fill(0x7f);
        std::fs::write(&broken_path, &broken).expect("write");
        let msg = check(&broken_path, Some(DiskFormat::Qcow2)).await;
        assert!(msg.starts_with("the file is not a valid qcow2 image: "), "{msg}");

        // A qcow2 declared raw, and a VMDK.
        let q = path(&dir, "a.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().expect("utf-8"), "1M"]);
        assert_eq!(check(&q, Some(DiskFormat::Raw)).await, "the file was declared raw but is a qcow2 image");
        let vmdk = path(&dir, "a.vmdk");
        qemu_img(&["create", "-q", "-f", "vmdk", vmdk.to_str().expect("utf-8"), "1M"]);
        assert_eq!(
            check(&vmdk, None).await,
            "the file is a vmdk image; Kumo accepts qcow2 and raw (convert it with qemu-img convert -O qcow2)"
        );
        assert_eq!(check(&vmdk, Some(DiskFormat::Qcow2)).await, "the file was declared qcow2 but is a vmdk image");
    }

    #[tokio::test]
    async fn backing_files_and_external_data_files_are_refused_before_qemu_img_opens_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chained = path(&dir, "chained.qcow2");
        // A backing file that does not even exist: the header alone condemns it.
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-F",
            "raw",
            "-b",
            "/etc/shadow",
            chained.to_str().expect("utf-8"),
            "1M",
        ]);
        assert_eq!(
            check(&chained, Some(DiskFormat::Qcow2)).await,
            "the qcow2 image refers to a backing file (/etc/shadow); upload a self-contained image (qemu-img convert -O qcow2 IN OUT)"
        );
        assert!(check(&chained, None).await.contains("backing file (/etc/shadow)"));

        let data = path(&dir, "data.raw");
        let external = path(&dir, "external.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", data.display()),
            external.to_str().expect("utf-8"),
            "1M",
        ]);
        let msg = check(&external, Some(DiskFormat::Qcow2)).await;
        assert!(msg.starts_with("the qcow2 image keeps its data in an external data file"), "{msg}");
    }

    mod properties {
        //! The header parser is the first code to touch an upload: property
        //! tests that it never panics and that no header naming another file
        //! gets through, however the rest of the header is filled. 2,000
        //! cases each (`PROPTEST_CASES` for more).
        use super::super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2_000);
            ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
        }

        /// A qcow2 header of `version` with the given fields, then `tail`.
        fn header(version: u32, backing: (u64, u32), encrypted: u32, incompatible: u64, tail: &[u8]) -> Vec<u8> {
            let mut h = Vec::new();
            h.extend_from_slice(QCOW2_MAGIC);
            h.extend_from_slice(&version.to_be_bytes());
            h.extend_from_slice(&backing.0.to_be_bytes());
            h.extend_from_slice(&backing.1.to_be_bytes());
            h.extend_from_slice(&16u32.to_be_bytes()); // cluster bits
            h.extend_from_slice(&(1u64 << 26).to_be_bytes()); // size
            h.extend_from_slice(&encrypted.to_be_bytes());
            h.resize(72, 0);
            if version >= 3 {
                h.extend_from_slice(&incompatible.to_be_bytes());
                h.resize(100, 0);
                h.extend_from_slice(&104u32.to_be_bytes()); // header length
            }
            h.extend_from_slice(tail);
            h
        }

        /// Header extensions: (type, data) each padded to 8 bytes, then the end marker.
        fn extensions(exts: &[(u32, Vec<u8>)]) -> Vec<u8> {
            let mut out = Vec::new();
            for (kind, data) in exts {
                out.extend_from_slice(&kind.to_be_bytes());
                out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(data);
                out.resize(out.len().div_ceil(8) * 8, 0);
            }
            out.extend_from_slice(&[0; 8]);
            out
        }

        fn other_extension() -> impl Strategy<Value = (u32, Vec<u8>)> {
            (
                any::<u32>().prop_filter("not the end or a data file", |k| *k != 0 && *k != EXT_DATA_FILE),
                prop::collection::vec(any::<u8>(), 0..40),
            )
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_bytes_are_sniffed_and_checked_without_panicking(head in prop::collection::vec(any::<u8>(), 0..2048)) {
                let _ = sniff(&head);
                let _ = check_qcow2_header(&head);
                let mut qcow = QCOW2_MAGIC.to_vec();
                qcow.extend_from_slice(&head);
                let _ = check_qcow2_header(&qcow);
            }

            #[test]
            fn a_header_naming_a_backing_file_is_always_refused(
                version in 2u32..=3,
                offset in 1u64..,
                len in any::<u32>(),
                encrypted in any::<u32>(),
                incompatible in any::<u64>(),
                tail in prop::collection::vec(any::<u8>(), 0..512),
            ) {
                let h = header(version, (offset, len), encrypted, incompatible, &tail);
                prop_assert!(matches!(check_qcow2_header(&h), Err(InspectError::BackingFile(_))));
            }

            #[test]
            fn an_external_data_file_is_always_refused(
                before in prop::collection::vec(other_extension(), 0..5),
                name in prop::collection::vec(any::<u8>(), 0..64),
                flagged in any::<bool>(),
                incompatible in any::<u64>(),
            ) {
                let mut exts = before;
                exts.push((EXT_DATA_FILE, name));
                let incompatible = if flagged { incompatible | INCOMPAT_DATA_FILE } else { incompatible & !INCOMPAT_DATA_FILE };
                let h = header(3, (0, 0), 0, incompatible, &extensions(&exts));
                prop_assert!(matches!(check_qcow2_header(&h), Err(InspectError::ExternalDataFile(_))));
            }

            #[test]
            fn a_clean_header_passes_whatever_its_other_extensions(
                exts in prop::collection::vec(other_extension(), 0..6),
                version in 2u32..=3,
            ) {
                let tail = if version == 3 { extensions(&exts) } else { Vec::new() };
                let h = header(version, (0, 0), 0, 0, &tail);
                prop_assert!(check_qcow2_header(&h).is_ok(), "{:?}", check_qcow2_header(&h));
            }
        }
    }
}
