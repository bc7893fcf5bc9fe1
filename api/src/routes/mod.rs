//! The HTTP surface: one module per resource, each with its own `routes()`.

mod access_keys;
mod agent;
pub(crate) mod audit;
mod billing;
pub mod etag;
mod flavors;
mod hosts;
mod identity;
mod images;
mod instances;
pub(crate) mod keypairs;
mod networks;
mod quarantine;
mod quotas;
mod replica;
mod snapshots;
mod stats;
mod volumes;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Kumo native API", description = "Instances, images, flavors, key pairs and hosts of a Kumo cloud. \
        Authenticate with POST /v1/auth/tokens and send the token as `Authorization: Bearer`. Errors are `{code, message}`."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The native API's routes and their OpenAPI document.
pub fn native() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(identity::routes())
        .merge(flavors::routes())
        .merge(images::routes())
        .merge(keypairs::routes())
        .merge(instances::routes())
        .merge(hosts::routes())
        .merge(quarantine::routes())
        .merge(audit::routes())
        .merge(billing::routes())
        .merge(volumes::routes())
        .merge(snapshots::routes())
        .merge(quotas::routes())
        .merge(access_keys::routes())
        .merge(networks::routes())
        .merge(stats::routes())
        .split_for_parts()
}

/// The whole controller: native API, OpenAPI document, agent protocol, and
/// the control panel under `/ui` (a client of the same router, in-process).
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let (native, doc) = native();
    let doc = Json(doc);
    let api = native
        .route("/v1/openapi.json", get(move || async move { doc.clone() }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(crate::metrics::serve))
        .merge(agent::routes())
        .merge(stats::agent_routes())
        .merge(replica::routes())
        .merge(crate::ec2::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state);
    // `/` is the EC2 Query API's; a plain browser visit there is sent to the panel (see `ec2::handle`).
    let panel = kumo_web_ui::routes(api.clone());
    api.merge(panel)
        .layer(axum::middleware::from_fn(etag::tag))
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::track))
}

/// How much of a file each read of a streamed file body takes.
const FILE_CHUNK: usize = 256 * 1024;

/// An image file as a streamed `application/octet-stream` body of `len` bytes.
pub(crate) fn file_body(file: tokio::fs::File, len: u64) -> Result<axum::response::Response, ApiError> {
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
        .header(axum::http::header::CONTENT_LENGTH, len)
        // 256 KiB reads: the default 4 KiB makes one blocking-pool round trip per
        // 4 KiB, which capped a 450 MB image at about 80 MB/s (debug build).
        .body(axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, FILE_CHUNK)))
        .map_err(|e| ApiError::Internal(e.to_string()))
}
