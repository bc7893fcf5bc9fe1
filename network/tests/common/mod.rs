//! Test network namespaces: named `kumo-t-<random>` (unique per run), entered
//! by the test thread with `setns`, deleted on drop (also when a test fails).
#![allow(dead_code)] // each test binary uses a different part

use std::fs::File;
use std::process::Command;

use nix::sched::{setns, CloneFlags};
use rand::Rng;

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct TestNetns {
    pub name: String,
}

/// Runs `prog args` and panics with its stderr if it fails.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestNetns {
    /// Creates `kumo-t-<random><suffix>`.
    pub fn new(suffix: &str) -> Self {
        let tag: u32 = rand::thread_rng().gen();
        let name = format!("kumo-t-{tag:08x}{suffix}");
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// Moves the calling thread into this namespace (for good: tests run
    /// each on their own thread, and build their runtime afterwards).
    pub fn enter(&self) {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A current-thread tokio runtime (its sockets live in the thread's namespace).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}
