//! What this host offers the scheduler: CPUs and memory from the hypervisor
//! (less the memory reserved for the host), disk from the configuration or
//! the free space where instance disks live.

use std::path::{Path, PathBuf};

use kumo_wire::agent::HostCapacity;

use crate::hypervisor::{Hypervisor, HypervisorError};

const GIB: u64 = 1024 * 1024 * 1024;

/// Errors measuring the host.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// The hypervisor could not report its resources.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// The free space of the state directory could not be read.
    #[error("could not read the free space of {path}")]
    FreeSpace {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Free space for unprivileged writers on the filesystem holding `path`, in whole GiB.
pub fn free_disk_gib(path: &Path) -> Result<u64, CapacityError> {
    let stat =
        rustix::fs::statvfs(path).map_err(|e| CapacityError::FreeSpace { path: path.to_owned(), source: e.into() })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize) / GIB)
}

/// Measures the host.
pub async fn measure(
    hypervisor: &dyn Hypervisor,
    reserved_memory_mib: u64,
    disk_gib: Option<u64>,
    state_dir: &Path,
) -> Result<HostCapacity, CapacityError> {
    let node = hypervisor.node_resources().await?;
    let disk_gib = match disk_gib {
        Some(gib) => gib,
        None => free_disk_gib(state_dir)?,
    };
    Ok(HostCapacity { vcpus: node.cpus, memory_mib: node.memory_mib.saturating_sub(reserved_memory_mib), disk_gib })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{test_node_uri, LibvirtHypervisor};

    #[tokio::test]
    async fn memory_is_offered_less_the_reserve_and_disk_as_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hv = LibvirtHypervisor::new(test_node_uri(dir.path()).expect("node"));
        let cap = measure(&hv, 512, Some(100), dir.path()).await.expect("measure");
        assert_eq!(cap, HostCapacity { vcpus: 4, memory_mib: 8192 - 512, disk_gib: 100 });
        let cap = measure(&hv, 512, None, dir.path()).await.expect("measure");
        assert_eq!(cap.disk_gib, free_disk_gib(dir.path()).expect("statvfs"));
        let err = measure(&hv, 0, None, Path::new("/nonexistent/dir")).await.expect_err("missing");
        assert_eq!(err.to_string(), "could not read the free space of /nonexistent/dir");
    }
}
