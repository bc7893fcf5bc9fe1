//! End-to-end tests of the real `kumo` binary against a fake controller
//! started in the test process. One test binary, one module per area.

mod fake;

mod auth;
mod billing;
mod host;
mod image;
mod instance;
mod keypair;
mod network;
mod quarantine;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fake::Fake;

/// A scratch home with its own config file, and a fake controller.
struct Env {
    dir: tempfile::TempDir,
    fake: Fake,
}

/// What one run of `kumo` did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Env {
    /// A fresh home and fake, not logged in.
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir"), fake: Fake::start() }
    }

    /// A fresh home and fake, with a saved valid token.
    fn logged_in() -> Self {
        let env = Self::new();
        let config = format!(
            "endpoint = \"{}\"\ntoken = \"{}\"\nexpires_at = \"2099-01-01T00:00:00Z\"\nusername = \"{}\"\n",
            env.fake.endpoint,
            fake::TOKEN,
            fake::USER
        );
        std::fs::write(env.config_path(), config).expect("write config");
        env
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `kumo args...` with `stdin` as its standard input.
    fn kumo_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kumo"))
            .args(args)
            .env("HOME", self.dir.path())
            .env("KUMO_CONFIG", self.config_path())
            .env_remove("KUMO_ENDPOINT")
            .env_remove("KUMO_TOKEN")
            .env_remove("KUMO_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kumo");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        let Output { status, stdout, stderr } = child.wait_with_output().expect("wait for kumo");
        Run {
            code: status.code(),
            stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
        }
    }

    fn kumo(&self, args: &[&str]) -> Run {
        self.kumo_with_stdin(args, "")
    }
}

impl Run {
    /// Asserts success and returns standard output.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "kumo failed: {self:#?}");
        &self.stdout
    }

    /// Asserts exit code 1 with exactly one `error: ` line on standard error, and returns it.
    fn failed(&self) -> &str {
        assert_eq!(self.code, Some(1), "kumo did not fail with 1: {self:#?}");
        let line = self.stderr.strip_suffix('\n').unwrap_or(&self.stderr);
        assert!(!line.contains('\n'), "more than one line on stderr: {:?}", self.stderr);
        assert!(line.starts_with("error: "), "no error prefix: {:?}", self.stderr);
        line
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}
