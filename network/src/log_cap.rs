//! Caps a log file that another process keeps appending to (dnsmasq's log,
//! a guest's serial console): past a size, the file is cut down in place to
//! its last lines. Writers must open it with `O_APPEND` (dnsmasq does; the
//! agent's domains use `append='on'`), so their next write lands at the new
//! end instead of leaving a hole. Lines written during the cut itself may be
//! lost; that is the price of not restarting the writer.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Cuts `path` down to (at most) its last `keep` bytes, starting at a line,
/// if it is longer than `max`. Returns whether it was cut; a missing file is
/// not an error (nothing to cut).
pub fn cap(path: &Path, max: u64, keep: u64) -> io::Result<bool> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len <= max {
        return Ok(false);
    }
    let keep = keep.min(max);
    file.seek(SeekFrom::Start(len - keep))?;
    let mut tail = Vec::with_capacity(usize::try_from(keep).unwrap_or(0));
    Read::by_ref(&mut file).take(keep).read_to_end(&mut tail)?;
    // Start at a whole line when there is one to start at.
    let start = tail.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tail = if start < tail.len() { &tail[start..] } else { &tail[..] };
    file.seek(SeekFrom::Start(0))?;
    file.write_all(tail)?;
    file.set_len(tail.len() as u64)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn lines(n: usize) -> String {
        (0..n).map(|i| format!("line {i:06}\n")).collect()
    }

    /// Issue 12 item 14: a log past its cap keeps only its last whole lines,
    /// and a writer that holds it open in append mode goes on at the new end.
    #[test]
    fn a_log_past_its_cap_keeps_its_tail_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut writer = OpenOptions::new().create(true).append(true).open(&path).expect("open");
        writer.write_all(lines(100_000).as_bytes()).expect("write"); // 1.2 MB
        assert!(cap(&path, 1 << 20, 4096).expect("cap"));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.len() <= 4096, "{}", text.len());
        assert!(text.starts_with("line "), "starts mid-line: {:?}", &text[..20]);
        assert!(text.ends_with("line 099999\n"));
        writer.write_all(b"after the cut\n").expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.len() <= 4096 + 14, "the writer left a hole: {}", text.len());
        assert!(text.ends_with("line 099999\nafter the cut\n"));
        assert!(!text.contains('\0'));
    }

    #[test]
    fn a_small_or_missing_log_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        assert!(!cap(&path, 10, 5).expect("missing"));
        assert!(!path.exists());
        std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&path).expect("create");
        std::fs::write(&path, "short\n").expect("write");
        assert!(!cap(&path, 10, 5).expect("small"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "short\n");
    }
}
