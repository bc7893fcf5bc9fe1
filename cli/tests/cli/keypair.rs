//! keypair create writes a private 0600 file once.

use crate::fake::PRIVATE_KEY;
use crate::{mode, Env};

#[test]
fn create_writes_a_0600_key_file_and_refuses_to_overwrite() {
    let env = Env::logged_in();
    let path = env.path("id_kumo");
    let path_arg = path.to_str().expect("utf-8");

    let out = env.kumo(&["keypair", "create", "k1", "--private-key-file", path_arg]);
    let stdout = out.ok();
    assert!(stdout.contains(&format!("Private key written to {path_arg} (mode 0600).")), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"), "key printed: {stdout}");
    assert_eq!(std::fs::read_to_string(&path).expect("key file"), PRIVATE_KEY);
    assert_eq!(mode(&path), 0o600);

    let again = env.kumo(&["keypair", "create", "k2", "--private-key-file", path_arg]);
    assert_eq!(again.failed(), format!("error: {path_arg} already exists; refusing to overwrite it"));
    assert_eq!(std::fs::read_to_string(&path).expect("key file"), PRIVATE_KEY);
    // Refused before asking the controller for a key that would be lost.
    assert_eq!(env.fake.seen().keypair_requests.len(), 1);
}

#[test]
fn create_without_a_file_prints_only_the_key_on_stdout() {
    let env = Env::logged_in();
    let out = env.kumo(&["keypair", "create", "k1"]);
    assert_eq!(out.ok(), PRIVATE_KEY);
    assert!(out.stderr.contains("shows it only once"), "{out:#?}");
}

#[test]
fn import_sends_the_public_key_line() {
    let env = Env::logged_in();
    let path = env.path("id.pub");
    std::fs::write(&path, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIfake me@laptop\n").expect("write");
    env.kumo(&["keypair", "import", "laptop", "--public-key-file", path.to_str().expect("utf-8")]).ok();
    let seen = env.fake.seen();
    assert_eq!(
        seen.keypair_requests[0].public_key.as_deref(),
        Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIfake me@laptop")
    );
}
