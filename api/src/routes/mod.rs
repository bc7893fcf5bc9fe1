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
        .fallback(|| async { ApiError::NoEndpoint("no such endpoint".into()) })
        .with_state(state);
    // `/` is the EC2 Query API's; a plain browser visit there is sent to the panel (see `ec2::handle`).
    let panel = kumo_web_ui::routes(api.clone());
    api.merge(panel)
        .layer(axum::middleware::from_fn(run_to_completion))
        .layer(axum::middleware::from_fn(etag::tag))
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::track))
}

/// Runs each request's handler in a task of its own, so that a client that
/// disconnects or times out (an agent killed mid-sync, a CLI interrupted)
/// does not cancel the handler halfway through: a future dropped inside a
/// database transaction could leave it half done, and on SQLite an abandoned
/// write transaction holds the one write lock. The handler finishes, the
/// answer is discarded.
pub(crate) async fn run_to_completion(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "a request's handler panicked");
            axum::response::IntoResponse::into_response(ApiError::Internal("the request's handler failed".into()))
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use axum::routing::post;
    use tower::ServiceExt;

    /// A request whose caller goes away (its future dropped, as hyper drops
    /// it when the client disconnects) still runs its handler to the end.
    #[tokio::test]
    async fn a_handler_finishes_when_its_caller_goes_away() {
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let app = axum::Router::new()
            .route(
                "/slow",
                post(move || async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    flag.store(true, Ordering::SeqCst);
                }),
            )
            .layer(axum::middleware::from_fn(super::run_to_completion));
        let req = axum::http::Request::post("/slow").body(axum::body::Body::empty()).unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(20), app.oneshot(req)).await;
        assert!(cut.is_err(), "the caller gave up before the handler finished");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(finished.load(Ordering::SeqCst), "the handler was cancelled with its caller");
    }
}
