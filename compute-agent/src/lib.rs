//! The Kumo compute agent: runs on every KVM host, converges the host's libvirt
//! domains to the controller's desired state and reports what it observes.
//!
//! Map: [`config`] (settings) → [`agent`] (wiring) runs the [`worker`] (sync
//! loop), which uses [`client`] (controller HTTP), [`ledger`] (the one
//! bookkeeping of instances, volumes and snapshots), [`observe`] (reports,
//! leak sweeps) and [`converge`] (one instance's desired state, through
//! [`hypervisor`], [`domain_xml`] and the storage crate), [`volumes`] and
//! [`snapshots`] (one volume's or snapshot's desired state, serialized per
//! domain by [`locks`]). [`networking`] plumbs the host's tenant networks (bridges,
//! DHCP, metadata, firewall, floating IPs) before instances start.
//! [`boot`] tells a host reboot from guests that powered off; [`quarantine`]
//! keeps the local storage files the controller does not list.
//! [`console`] serves console logs. This crate holds the only code in Kumo
//! that talks to libvirt.

pub mod agent;
pub mod boot;
pub mod capacity;
pub mod client;
pub mod config;
pub mod console;
pub mod converge;
pub mod credentials;
pub mod domain_xml;
pub mod hypervisor;
pub mod inventory;
pub mod isolation;
pub mod lease_watch;
pub mod ledger;
pub mod locks;
pub mod metrics;
pub mod networking;
pub mod notices;
pub mod observe;
pub mod quarantine;
pub mod snapshots;
pub mod stats;
pub mod status;
pub mod tls;
pub mod volumes;
pub mod worker;

#[cfg(test)]
mod testing;

pub use agent::{Agent, AgentError};
pub use config::AgentConfig;

/// An error and its sources, joined by `": "` (for reports and logs).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
