//! Network namespaces for the network crate's real tests: every namespace a
//! test creates is named with a prefix unique to the test run and deleted on
//! drop; code runs inside one on a thread that entered it (sockets keep the
//! namespace they were created in).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("kt{}x{}{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NAME <args>`, which must succeed.
    pub fn ip(&self, args: &str) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        sh(&v);
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.name]).args(cmd).output().expect("ip netns exec")
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in netns panicked")
    }

    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
                .expect("setns");
            f()
        })
    }

    /// Runs an async block on a current-thread runtime inside the namespace.
    pub fn block_on<T: Send + 'static, F: std::future::Future<Output = T>>(
        &self,
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        self.run(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f())
        })
    }

    /// A TCP echo server on `port` (all addresses); records its peers.
    pub fn echo_server(&self, port: u16) -> Arc<Mutex<Vec<SocketAddr>>> {
        let peers = Arc::new(Mutex::new(Vec::new()));
        let listener = self.run(move || TcpListener::bind(("0.0.0.0", port)).expect("bind echo server"));
        let seen = peers.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                if let Ok(peer) = conn.peer_addr() {
                    seen.lock().unwrap().push(peer);
                }
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    for line in BufReader::new(conn).lines() {
                        let Ok(line) = line else { return };
                        if writeln!(w, "{line}").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        peers
    }

    /// Opens a TCP connection from inside the namespace (optionally from a
    /// given source address); `None` when it cannot be established.
    pub fn connect(&self, to: Ipv4Addr, port: u16, from: Option<Ipv4Addr>) -> Option<TcpStream> {
        self.run(move || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            if let Some(from) = from {
                s.bind(&SocketAddrV4::new(from, 0).into()).ok()?;
            }
            s.connect_timeout(&SocketAddrV4::new(to, port).into(), Duration::from_millis(1500)).ok()?;
            let s: TcpStream = s.into();
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            Some(s)
        })
    }

    /// Whether an echo round trip to `to:port` works from inside the namespace.
    pub fn reaches(&self, to: Ipv4Addr, port: u16) -> bool {
        self.connect(to, port, None).is_some_and(|mut s| echo(&mut s))
    }
}

/// One echo round trip on an open connection.
pub fn echo(s: &mut TcpStream) -> bool {
    if writeln!(s, "hello").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line == "hello\n"
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

pub fn sh(cmd: &[&str]) -> Output {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect(cmd[0]);
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A veth pair: `host_if` in `host`, `guest_if` in `guest`.
pub fn veth(host: &Netns, host_if: &str, guest: &Netns, guest_if: &str) {
    host.ip(&format!("link add {host_if} type veth peer name {guest_if} netns {}", guest.name));
    host.ip(&format!("link set {host_if} up"));
    guest.ip(&format!("link set {guest_if} up"));
}
