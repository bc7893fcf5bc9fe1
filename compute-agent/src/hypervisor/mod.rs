//! What the agent needs from a hypervisor, cut to its capabilities: read the
//! node's resources, list domains, and define/start/stop/undefine one domain.
//! [`LibvirtHypervisor`] is the only implementation; tests run it against
//! libvirt's `test:///` driver instead of a hand-written mock.

mod libvirt;
mod sample;

use async_trait::async_trait;
use kumo_wire::agent::ObservedPower;
use kumo_wire::stats::InstanceSample;
use kumo_wire::InstanceId;

pub use libvirt::{test_node_uri, LibvirtHypervisor, DEFAULT_CALL_TIMEOUT};

/// A libvirt domain as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// The domain's name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// Its power state.
    pub power: ObservedPower,
    /// The Kumo instance it belongs to (from the agent's metadata or its name), if any.
    pub instance: Option<InstanceId>,
}

/// CPU and memory of the node, as the hypervisor reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeResources {
    /// CPU threads.
    pub cpus: u32,
    /// Physical memory in MiB.
    pub memory_mib: u64,
}

/// Errors of hypervisor calls. `message` is the hypervisor's own text, fit to
/// show to a user as the reason an instance failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HypervisorError {
    /// The connection to the hypervisor could not be opened.
    #[error("could not connect to libvirt at {uri}: {message}")]
    Connect {
        /// The connection URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// No domain of that name exists.
    #[error("no libvirt domain named {0}")]
    NoSuchDomain(String),
    /// A call failed.
    #[error("libvirt {action} of {target} failed: {message}")]
    Call {
        /// What was attempted (`define`, `start`, ...).
        action: &'static str,
        /// The domain (or `node`).
        target: String,
        /// libvirt's message.
        message: String,
    },
    /// libvirt did not answer within the call time limit.
    #[error("libvirt {action} of {target} did not answer within {limit:?} (is libvirtd or the guest's QEMU stuck?)")]
    Timeout {
        /// What was attempted.
        action: &'static str,
        /// The domain (or `node`).
        target: String,
        /// The time limit it ran into.
        limit: std::time::Duration,
    },
    /// A blocking call's thread panicked or was cancelled (a bug).
    #[error("libvirt call was aborted")]
    Aborted,
}

/// The hypervisor operations the agent uses. Every call may block on the
/// hypervisor; implementations keep that off the async executor.
#[async_trait]
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    /// The node's CPUs and memory.
    async fn node_resources(&self) -> Result<NodeResources, HypervisorError>;
    /// Every domain, running or not.
    async fn list_domains(&self) -> Result<Vec<DomainInfo>, HypervisorError>;
    /// One domain by name; `None` when it does not exist.
    async fn domain(&self, name: &str) -> Result<Option<DomainInfo>, HypervisorError>;
    /// Defines (or redefines) a persistent domain from its XML.
    async fn define(&self, xml: &str) -> Result<(), HypervisorError>;
    /// Starts a defined domain.
    async fn start(&self, name: &str) -> Result<(), HypervisorError>;
    /// Asks the guest to power off (ACPI power button); returns at once.
    async fn shutdown(&self, name: &str) -> Result<(), HypervisorError>;
    /// Pulls the plug.
    async fn destroy(&self, name: &str) -> Result<(), HypervisorError>;
    /// Removes a (stopped) domain's definition.
    async fn undefine(&self, name: &str) -> Result<(), HypervisorError>;
    /// The domain's XML: the running configuration, or with `inactive` the
    /// persistent one that the next start uses.
    async fn domain_xml(&self, name: &str, inactive: bool) -> Result<String, HypervisorError>;
    /// Adds a device (a `<disk>`) to the running guest (`live`, hot-plug) and/or
    /// to the persistent definition (`config`).
    async fn attach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError>;
    /// Asks for a device's removal from the running guest (`live`; the guest
    /// must let go, which can take a moment) and/or from the persistent definition.
    async fn detach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError>;
    /// Grows a disk of a running guest to `bytes` (the guest sees the new size).
    async fn resize_disk(&self, name: &str, device: &str, bytes: u64) -> Result<(), HypervisorError>;
    /// Copies the disk `device` of a running guest, as it is at this instant,
    /// into a new qcow2 file at `target` while the guest keeps running
    /// (libvirt's push-mode backup: QEMU copies each block before the guest
    /// overwrites it). Returns once the copy is complete.
    async fn backup_disk(&self, name: &str, device: &str, target: &std::path::Path) -> Result<(), HypervisorError>;
    /// Cumulative counters (CPU time, memory, disks, NICs) of every running
    /// domain that belongs to a Kumo instance, for the statistics reports
    /// (`stats.rs`). A hypervisor that keeps no statistics reports none.
    async fn sample_domains(&self) -> Result<Vec<InstanceSample>, HypervisorError> {
        Ok(Vec::new())
    }
}
