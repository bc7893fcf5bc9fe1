//! The control panel: server-rendered pages (tera templates and static assets
//! embedded in the binary) whose handlers are clients of the native API.
//!
//! Every page calls the controller's native router in-process with the
//! session's JWT as `Authorization: Bearer`, so the panel shows exactly what
//! the API shows and authorization is the API's own: a member who opens an
//! admin page gets the API's 403, another project's instance the API's 404.
//! The panel adds only what a browser needs: a session cookie holding the
//! JWT, a CSRF token in every form, and HTML.

mod admin;
mod client;
mod error;
mod graphs;
pub mod i18n;
mod net;
mod pages;
mod render;
mod session;

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

pub use client::{ApiClient, ApiFailure};
pub use error::PanelError;
pub use session::{csrf_token, Claims, SESSION_COOKIE};

/// What every handler shares.
#[derive(Clone)]
pub struct Panel {
    api: ApiClient,
}

impl std::fmt::Debug for Panel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Panel").finish_non_exhaustive()
    }
}

impl Panel {
    /// A panel calling `api` (the native API router, state applied).
    pub fn new(api: Router) -> Self {
        Self { api: ApiClient::new(api) }
    }
}

/// The panel's routes, all under `/ui/` (merge them into the controller's
/// router). `api` is the native API router the pages call in-process.
pub fn routes(api: Router) -> Router {
    let panel = Panel::new(api);
    Router::new()
        .route("/ui/", get(pages::dashboard))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/static/panel.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], render::CSS) }))
        .route("/ui/static/panel.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], render::JS) }))
        .route("/ui/instances", get(pages::instances).post(pages::launch))
        .route("/ui/instances.json", get(pages::instances_json))
        .route("/ui/instances/new", get(pages::launch_form))
        .route("/ui/instances/{id}", get(pages::instance))
        .route("/ui/instances/{id}/live.json", get(pages::instance_live))
        .route("/ui/instances/{id}/graphs", get(pages::instance_graphs))
        .route("/ui/instances/{id}/action", post(pages::instance_action))
        .route("/ui/instances/{id}/snapshot", post(pages::instance_snapshot))
        .route("/ui/estimate.json", get(pages::estimate))
        .route("/ui/images", get(pages::images))
        .route("/ui/images/{id}/delete", post(pages::image_delete))
        .route("/ui/volumes", get(pages::volumes).post(pages::volume_create))
        .route("/ui/volumes/{id}/action", post(pages::volume_action))
        .route("/ui/snapshots", get(pages::snapshots).post(pages::snapshot_create))
        .route("/ui/snapshots/{id}/delete", post(pages::snapshot_delete))
        .route("/ui/keypairs", get(pages::keypairs).post(pages::keypair_create))
        .route("/ui/keypairs/{name}/delete", post(pages::keypair_delete))
        .route("/ui/networks", get(net::networks).post(net::network_create))
        .route("/ui/networks/{id}/delete", post(net::network_delete))
        .route("/ui/security-groups", get(net::groups).post(net::group_create))
        .route("/ui/security-groups/{id}/delete", post(net::group_delete))
        .route("/ui/security-groups/{id}/rules", post(net::rule_add))
        .route("/ui/security-groups/{id}/rules/{rule}/delete", post(net::rule_delete))
        .route("/ui/floating-ips", get(net::fips).post(net::fip_action))
        .route("/ui/billing", get(pages::billing))
        .route("/ui/billing/invoices/{month}", get(pages::invoice))
        .route("/ui/billing/invoices/{month}/csv", get(pages::invoice_csv))
        .route("/ui/admin/hosts", get(admin::hosts))
        .route("/ui/admin/hosts/{id}/{action}", post(admin::host_action))
        .route("/ui/admin/flavors", get(admin::flavors).post(admin::flavor_create))
        .route("/ui/admin/flavors/{id}/delete", post(admin::flavor_delete))
        .route("/ui/admin/prices", get(admin::prices).post(admin::price_create))
        .route("/ui/admin/projects", get(admin::projects).post(admin::project_create))
        .route("/ui/admin/users", post(admin::user_create))
        .route("/ui/admin/quotas", get(admin::quotas).post(admin::quotas_set))
        .route("/ui/lang", get(i18n::switch))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn(i18n::middleware))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(panel)
}

/// The panel's Content-Security-Policy: its own scripts, styles and forms
/// only (it has no inline script or style), never framed (clickjacking).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the browser-side defences to every panel response.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    resp
}

async fn not_found() -> Response {
    PanelError::NotFound.into_response()
}
