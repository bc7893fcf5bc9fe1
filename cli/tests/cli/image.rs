//! image register streams each file with its length.

use crate::Env;

/// Deterministic bytes that are not all alike.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

#[test]
fn register_kernel_image_uploads_both_files_intact() {
    let env = Env::logged_in();
    // Larger than the client's read size, so the body arrives in several chunks.
    let kernel = pattern(1_500_000, 7);
    let initrd = pattern(70_001, 3);
    std::fs::write(env.path("vmlinuz"), &kernel).expect("write");
    std::fs::write(env.path("initrd.img"), &initrd).expect("write");

    let out = env.kumo(&[
        "image",
        "register",
        "--name",
        "tiny",
        "--kernel",
        env.path("vmlinuz").to_str().expect("utf-8"),
        "--initrd",
        env.path("initrd.img").to_str().expect("utf-8"),
    ]);
    let stdout = out.ok();
    assert!(stdout.contains("STATE:        active"), "{stdout}");
    assert!(stdout.contains("kernel  1.4 MiB"), "{stdout}");

    let seen = env.fake.seen();
    let uploads = &seen.uploads;
    assert_eq!(uploads.iter().map(|u| u.role.as_str()).collect::<Vec<_>>(), ["kernel", "initrd"]);
    for (upload, expected) in uploads.iter().zip([&kernel, &initrd]) {
        assert_eq!(upload.body.len(), expected.len(), "{} length", upload.role);
        assert!(upload.body == *expected, "{} bytes differ", upload.role);
        assert_eq!(upload.content_length, Some(expected.len() as u64), "{} content-length", upload.role);
        assert!(!upload.chunked, "{} was sent chunked", upload.role);
        assert_eq!(upload.content_type.as_deref(), Some("application/octet-stream"));
    }
}

#[test]
fn missing_files_are_refused_before_registering() {
    let env = Env::logged_in();
    let out = env.kumo(&["image", "register", "--name", "d", "--disk", "/no/such/disk.qcow2", "--format", "qcow2"]);
    assert_eq!(out.failed(), "error: cannot read /no/such/disk.qcow2: No such file or directory (os error 2)");
    assert!(env.fake.seen().images.is_empty());
}

#[test]
fn image_upload_streams_the_file_in_one_request_and_shows_refusals_on_one_line() {
    let env = Env::logged_in();
    let disk = pattern(1_048_576, 5);
    std::fs::write(env.path("disk.raw"), &disk).expect("write");
    let out = env.kumo(&[
        "image",
        "upload",
        env.path("disk.raw").to_str().expect("utf-8"),
        "--name",
        "deb",
        "--format",
        "raw",
    ]);
    let stdout = out.ok();
    assert!(stdout.contains("STATE:        active"), "{stdout}");
    assert!(stdout.contains("VIRTUAL SIZE: 1.0 MiB"), "{stdout}");
    {
        let seen = env.fake.seen();
        let upload = seen.uploads.last().expect("an upload");
        assert_eq!(upload.role, "upload?raw");
        assert!(upload.body == disk, "bytes differ");
        assert_eq!(upload.content_length, Some(disk.len() as u64));
        assert!(!upload.chunked);
    }
    std::fs::write(env.path("evil.qcow2"), b"bad image").expect("write");
    let out = env.kumo(&["image", "upload", env.path("evil.qcow2").to_str().expect("utf-8"), "--name", "evil"]);
    assert_eq!(
        out.failed(),
        "error: the qcow2 image refers to a backing file (/etc/shadow); upload a self-contained image \
         (qemu-img convert -O qcow2 IN OUT); nothing was kept (validation_failed)"
    );
}
