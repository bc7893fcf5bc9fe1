//! The agent's Prometheus metrics, served at `GET /metrics` by its HTTP server.
//!
//! One [`AgentMetrics`] per agent (no global: tests run several agents in one process).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::hypervisor::{DomainInfo, Hypervisor, HypervisorError, NodeResources};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: String,
    outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s (a converge can download an image).
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The agent's registry and the handles that update it.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    syncs: Counter,
    sync_errors: Counter,
    sync_duration: Histogram,
    converge_duration: HistogramFamily<ActionLabels>,
    converge_errors: Family<ActionLabels, Counter>,
    libvirt_duration: HistogramFamily<CallLabels>,
    firewall_applies: Counter,
    firewall_failures: Counter,
    instances: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kumo_agent");
        let syncs = Counter::default();
        registry.register("syncs", "Syncs with the controller that succeeded", syncs.clone());
        let sync_errors = Counter::default();
        registry.register(
            "sync_errors",
            "Sync passes that failed (libvirt, registration, the controller)",
            sync_errors.clone(),
        );
        let sync_duration = latency_histogram();
        registry.register(
            "sync_duration_seconds",
            "Successful syncs: the request to the controller, including its long poll",
            sync_duration.clone(),
        );
        let converge_duration: HistogramFamily<ActionLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "converge_duration_seconds",
            "Convergence tasks by action (instance, volume, snapshot)",
            converge_duration.clone(),
        );
        let converge_errors = Family::<ActionLabels, Counter>::default();
        registry.register("converge_errors", "Convergence tasks that failed, by action", converge_errors.clone());
        let libvirt_duration: HistogramFamily<CallLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "libvirt_call_duration_seconds",
            "libvirt calls by call and outcome",
            libvirt_duration.clone(),
        );
        let firewall_applies = Counter::default();
        registry.register("firewall_applies", "Host firewall applies (nftables)", firewall_applies.clone());
        let firewall_failures = Counter::default();
        registry.register("firewall_failures", "Host firewall applies that failed", firewall_failures.clone());
        let instances = Gauge::default();
        registry.register("instances", "Kumo domains on this host at the last pass", instances.clone());
        Self {
            registry,
            syncs,
            sync_errors,
            sync_duration,
            converge_duration,
            converge_errors,
            libvirt_duration,
            firewall_applies,
            firewall_failures,
            instances,
        }
    }
}

impl AgentMetrics {
    /// The text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// A successful sync that took since `started`.
    pub fn synced(&self, started: Instant) {
        self.syncs.inc();
        self.sync_duration.observe(started.elapsed().as_secs_f64());
    }

    /// A failed sync pass.
    pub fn sync_failed(&self) {
        self.sync_errors.inc();
    }

    /// A convergence task of `action` that ran since `started`.
    pub fn converged(&self, action: &str, started: Instant, failed: bool) {
        let labels = ActionLabels { action: action.to_owned() };
        self.converge_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        if failed {
            self.converge_errors.get_or_create(&labels).inc();
        } else {
            // Present at zero once the action ran, so rates work from the start.
            let _ = self.converge_errors.get_or_create(&labels);
        }
    }

    /// A firewall apply and whether it worked.
    pub fn firewall_applied(&self, ok: bool) {
        self.firewall_applies.inc();
        if !ok {
            self.firewall_failures.inc();
        }
    }

    /// The number of Kumo domains on the host.
    pub fn set_instances(&self, n: usize) {
        self.instances.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn libvirt<T>(&self, call: &str, started: Instant, result: &Result<T, HypervisorError>) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.libvirt_duration
            .get_or_create(&CallLabels { call: call.to_owned(), outcome: outcome.to_owned() })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A [`Hypervisor`] that times every call into [`AgentMetrics`].
#[derive(Debug)]
pub struct MeteredHypervisor {
    inner: Arc<dyn Hypervisor>,
    metrics: Arc<AgentMetrics>,
}

impl MeteredHypervisor {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Hypervisor>, metrics: Arc<AgentMetrics>) -> Self {
        Self { inner, metrics }
    }
}

macro_rules! timed {
    ($self:ident, $call:literal, $e:expr) => {{
        let started = Instant::now();
        let result = $e.await;
        $self.metrics.libvirt($call, started, &result);
        result
    }};
}

#[async_trait]
impl Hypervisor for MeteredHypervisor {
    async fn node_resources(&self) -> Result<NodeResources, HypervisorError> {
        timed!(self, "node_resources", self.inner.node_resources())
    }
    async fn list_domains(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        timed!(self, "list_domains", self.inner.list_domains())
    }
    async fn domain(&self, name: &str) -> Result<Option<DomainInfo>, HypervisorError> {
        timed!(self, "domain", self.inner.domain(name))
    }
    async fn define(&self, xml: &str) -> Result<(), HypervisorError> {
        timed!(self, "define", self.inner.define(xml))
    }
    async fn start(&self, name: &str) -> Result<(), HypervisorError> {
        timed!(self, "start", self.inner.start(name))
    }
    async fn shutdown(&self, name: &str) -> Result<(), HypervisorError> {
        timed!(self, "shutdown", self.inner.shutdown(name))
    }
    async fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
        timed!(self, "destroy", self.inner.destroy(name))
    }
    async fn undefine(&self, name: &str) -> Result<(), HypervisorError> {
        timed!(self, "undefine", self.inner.undefine(name))
    }
    async fn domain_xml(&self, name: &str, inactive: bool) -> Result<String, HypervisorError> {
        timed!(self, "domain_xml", self.inner.domain_xml(name, inactive))
    }
    async fn sample_domains(&self) -> Result<Vec<kumo_wire::stats::InstanceSample>, HypervisorError> {
        timed!(self, "sample_domains", self.inner.sample_domains())
    }
    async fn attach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError> {
        timed!(self, "attach_device", self.inner.attach_device(name, xml, live, config))
    }
    async fn detach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HypervisorError> {
        timed!(self, "detach_device", self.inner.detach_device(name, xml, live, config))
    }
    async fn resize_disk(&self, name: &str, device: &str, bytes: u64) -> Result<(), HypervisorError> {
        timed!(self, "resize_disk", self.inner.resize_disk(name, device, bytes))
    }
    async fn backup_disk(&self, name: &str, device: &str, target: &std::path::Path) -> Result<(), HypervisorError> {
        timed!(self, "backup_disk", self.inner.backup_disk(name, device, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_series_and_counts_by_action() {
        let m = AgentMetrics::default();
        m.synced(Instant::now());
        m.sync_failed();
        m.converged("instance", Instant::now(), false);
        m.converged("volume", Instant::now(), true);
        m.firewall_applied(true);
        m.firewall_applied(false);
        m.set_instances(3);
        let text = m.render();
        for line in [
            "kumo_agent_syncs_total 1",
            "kumo_agent_sync_errors_total 1",
            "kumo_agent_sync_duration_seconds_count 1",
            "kumo_agent_converge_errors_total{action=\"instance\"} 0",
            "kumo_agent_converge_errors_total{action=\"volume\"} 1",
            "kumo_agent_converge_duration_seconds_count{action=\"volume\"} 1",
            "kumo_agent_firewall_applies_total 2",
            "kumo_agent_firewall_failures_total 1",
            "kumo_agent_instances 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
