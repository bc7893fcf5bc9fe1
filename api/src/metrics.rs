//! The controller's Prometheus metrics, served at `GET /metrics`.
//!
//! One [`Metrics`] per controller (kept in [`AppState`], never a global, so that tests
//! can run several controllers in one process). Counters and histograms are updated
//! where things happen (the HTTP layer, the scheduler, the billing worker); the
//! instances-by-state and heartbeat-age gauges are computed from the database at
//! each scrape.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sqlx::Row;

use crate::error::ApiError;
use crate::state::AppState;

/// The content type of the OpenMetrics text format `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one API request: the route pattern (never the raw path), method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The matched route, e.g. `/v1/instances/{id}`; `unmatched` for the fallback.
    pub route: String,
    /// The response status code.
    pub status: u16,
}

/// Labels of a latency histogram: the route and method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The matched route.
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The controller's metrics registry and the handles that update it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// API requests by route, method and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// API request latency by route and method, in seconds.
    pub http_duration: HistogramFamily<RouteLabels>,
    /// Instances the scheduler placed on a host.
    pub placements: Counter,
    /// Instances the scheduler found no valid host for.
    pub placement_failures: Counter,
    /// Billing hours closed.
    pub billing_closes: Counter,
    instances: Family<StateLabels, Gauge>,
    heartbeat_age: Family<HostLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// One scrape at a time refreshes and encodes the scrape-time gauges.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every controller metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kumo");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "API requests by route, method and status", http_requests.clone());
        let http_duration: HistogramFamily<RouteLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("http_request_duration_seconds", "API request latency", http_duration.clone());
        let placements = Counter::default();
        registry.register("scheduler_placements", "Instances placed on a host", placements.clone());
        let placement_failures = Counter::default();
        registry.register(
            "scheduler_placement_failures",
            "Instances no host could take (no valid host)",
            placement_failures.clone(),
        );
        let billing_closes = Counter::default();
        registry.register("billing_hour_closes", "Billing hours closed", billing_closes.clone());
        let instances = Family::<StateLabels, Gauge>::default();
        registry.register("instances", "Instances by state (read from the database at scrape time)", instances.clone());
        let heartbeat_age = Family::<HostLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "host_heartbeat_age_seconds",
            "Seconds since each host's last sync (heartbeat); absent for a host that never synced",
            heartbeat_age.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            placements,
            placement_failures,
            billing_closes,
            instances,
            heartbeat_age,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Refreshes the database-derived gauges and encodes everything in the text format.
    pub async fn render(&self, state: &AppState) -> Result<String, ApiError> {
        let _one = self.scrape.lock().await;
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM instances GROUP BY state")
            .fetch_all(state.db.pool())
            .await
            .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
        self.instances.clear();
        for row in &rows {
            let s: String = row.try_get("state").map_err(|e| ApiError::Internal(e.to_string()))?;
            let n: i64 = row.try_get("n").map_err(|e| ApiError::Internal(e.to_string()))?;
            self.instances.get_or_create(&StateLabels { state: s }).set(n);
        }
        let now = kumo_wire::Timestamp::now().millis();
        self.heartbeat_age.clear();
        // Two columns, not the full host list (~10x slower at 1,000 hosts: kumo-bench scheduler).
        let hosts = sqlx::query("SELECT name, last_heartbeat_at FROM hosts WHERE last_heartbeat_at IS NOT NULL")
            .fetch_all(state.db.pool())
            .await
            .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
        for row in &hosts {
            let name: String = row.try_get("name").map_err(|e| ApiError::Internal(e.to_string()))?;
            let at: i64 = row.try_get("last_heartbeat_at").map_err(|e| ApiError::Internal(e.to_string()))?;
            let age = (now - at).max(0) as f64 / 1000.0;
            self.heartbeat_age.get_or_create(&HostLabels { host: name }).set(age);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
        Ok(out)
    }
}

/// Whether `peer` may read `/metrics` under the configured allow-list (empty: anyone).
pub fn allowed(allow: &[ipnet::IpNet], peer: Option<IpAddr>) -> bool {
    if allow.is_empty() {
        return true;
    }
    peer.is_some_and(|ip| allow.iter().any(|net| net.contains(&ip)))
}

/// `GET /metrics`: unauthenticated, as Prometheus expects; `metrics = false` turns it
/// off (404) and `metrics_allowed_cidrs` restricts who may read it (403).
pub async fn serve(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    if !state.config.metrics {
        return Err(ApiError::NoEndpoint("metrics are turned off (metrics = false)".into()));
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if !allowed(&state.config.metrics_allow_list(), peer) {
        return Err(ApiError::Forbidden("this address may not read metrics (metrics_allowed_cidrs)".into()));
    }
    let text = state.metrics.render(&state).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// Middleware counting every request by its matched route (so ids never become labels).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    let status = response.status();
    metrics
        .http_duration
        .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    metrics.http_requests.get_or_create(&RequestLabels { method, route, status: status_code(status) }).inc();
    response
}

fn status_code(status: StatusCode) -> u16 {
    status.as_u16()
}
