//! The EC2-compatible Query API (version 2016-11-15) at the root path `/` of
//! the controller's listener, so boto3 and the AWS CLI work with
//! `endpoint_url=http://controller:port/`.
//!
//! An adapter only: a request is authenticated with AWS Signature Version 4
//! ([`sigv4`]) against an access key ([`crate::access_keys`]), becomes a
//! [`Caller`] of the key owner's project, and each action calls the same domain
//! functions as the native API (`instances`, `volumes`, `snapshots`, `db`), so
//! state, quotas and project isolation are the native API's. Another
//! project's ids answer `…NotFound`, exactly like ids that never existed.
//! What only EC2 needs lives in the tables of migration 0005: tags and
//! RunInstances client tokens.

pub mod actions;
pub mod errors;
pub mod params;
pub mod replay;
pub mod sigv4;
pub mod sts;
pub mod xml;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use kumo_wire::Timestamp;

use crate::auth::Caller;
use crate::state::AppState;
use errors::{Ec2Error, Ec2Result};
use params::Params;

/// The API version served.
pub const API_VERSION: &str = "2016-11-15";

/// The service name in SigV4 credential scopes.
pub const SERVICE: &str = "ec2";

/// Largest accepted request body (user data is at most 64 KiB, base64 makes it larger).
const MAX_BODY: usize = 1024 * 1024;

/// One authenticated request, as actions see it.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Shared controller state.
    pub state: &'a AppState,
    /// The key owner, scoped to their project.
    pub caller: Caller,
    /// The request's parameters.
    pub params: Params,
    /// Echoed in every answer.
    pub request_id: String,
}

/// The EC2 endpoint: `POST /` (form body) and `GET /?Action=…`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/", any(handle))
}

fn new_request_id() -> String {
    let id = uuid_like();
    format!("{}-{}-{}-{}-{}", &id[0..8], &id[8..12], &id[12..16], &id[16..20], &id[20..32])
}

fn uuid_like() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response()
}

/// Renders an error as EC2's error document.
pub fn error_response(e: &Ec2Error, request_id: &str) -> Response {
    xml_response(e.status, xml::error_document(e.code, &e.message, request_id))
}

async fn handle(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if is_browser_visit(&method, &uri, &headers) {
        return axum::response::Redirect::to("/ui/").into_response();
    }
    let request_id = new_request_id();
    match serve(&state, &method, &uri, &headers, &body, &request_id).await {
        Ok(body) => xml_response(StatusCode::OK, body),
        Err(e) => {
            tracing::debug!(code = e.code, message = %e.message, "EC2 request refused");
            if sts::is_sts_request(&uri, &body) {
                return xml_response(e.status, sts::error_document(&e, &request_id));
            }
            error_response(&e, &request_id)
        }
    }
}

/// A plain `GET /` (no `Action`, no signature) is a person opening the
/// controller's address: send them to the control panel.
fn is_browser_visit(method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
    let has_action = uri.query().is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some("Action")));
    (method == Method::GET || method == Method::HEAD) && !has_action && !headers.contains_key(header::AUTHORIZATION)
}

async fn serve(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    request_id: &str,
) -> Ec2Result<String> {
    if method != Method::GET && method != Method::POST {
        return Err(Ec2Error::unsupported(format!("the EC2 Query API answers GET and POST, not {method}")));
    }
    if body.len() > MAX_BODY {
        return Err(Ec2Error::invalid_value(format!("the request body is over {MAX_BODY} bytes")));
    }
    let query = uri.query().unwrap_or("");
    let params = Params::from_request(query, body)?;
    let req = sigv4::Request { method: method.as_str(), path: uri.path(), query, headers, body };
    let action = params.get("Action").unwrap_or_default().to_owned();
    let sts = sts::ACTIONS.contains(&action.as_str());
    let (caller, signed) = authenticate(state, &req, if sts { sts::SERVICE } else { SERVICE }).await?;
    if signed.presigned && replay::guards(&action, params.get("ClientToken").is_some()) {
        state.guards.ec2_replay.admit(&signed.signature, signed.valid_until, signed.now).map_err(|e| match e {
            replay::Replay::Seen => Ec2Error::auth_failure(e.to_string()),
            replay::Replay::Full => Ec2Error {
                code: "RequestLimitExceeded",
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
            },
        })?;
    }
    if action.is_empty() {
        return Err(Ec2Error::missing("Action"));
    }
    let version = if sts { sts::API_VERSION } else { API_VERSION };
    if let Some(v) = params.get("Version") {
        if v != version {
            return Err(Ec2Error::client("InvalidParameterValue", format!("Version {v} is not served; use {version}")));
        }
    }
    let ctx = Ctx { state, caller, params, request_id: request_id.to_owned() };
    if sts {
        return sts::dispatch(&ctx, &action);
    }
    actions::dispatch(&ctx, &action).await
}

/// Verifies the signature and returns the key's owner.
/// A verified signature, for the replay cache.
struct Signed {
    /// A presigned URL (query-string signature), as opposed to a header signature.
    presigned: bool,
    signature: Vec<u8>,
    valid_until: i64,
    now: i64,
}

async fn authenticate(state: &AppState, req: &sigv4::Request<'_>, service: &str) -> Ec2Result<(Caller, Signed)> {
    let sig = sigv4::parse(req).map_err(|e| match e {
        sigv4::SigError::Missing => {
            Ec2Error { code: "MissingAuthenticationToken", status: StatusCode::UNAUTHORIZED, message: e.to_string() }
        }
        other => Ec2Error::auth_failure(other.to_string()),
    })?;
    let region = &state.config.ec2_region;
    if sig.credential.service != service {
        return Err(Ec2Error::auth_failure(format!(
            "Credential should be scoped to correct service: '{service}', not '{}'",
            sig.credential.service
        )));
    }
    if &sig.credential.region != region {
        return Err(Ec2Error::auth_failure(format!(
            "Credential should be scoped to a valid region: '{region}', not '{}'",
            sig.credential.region
        )));
    }
    let owner = crate::access_keys::lookup(&state.db, &state.sealer, &sig.credential.access_key_id)
        .await?
        .ok_or_else(|| Ec2Error::auth_failure("AWS was not able to validate the provided access credentials"))?;
    let now = Timestamp::now().millis() / 1000;
    let skew = i64::try_from(state.config.ec2_clock_skew_secs).unwrap_or(i64::MAX / 2);
    let valid_until = sigv4::verify(&sig, req, &owner.secret, now, skew).map_err(|e| match e {
        sigv4::SigError::Expired(m) => Ec2Error::request_expired(m),
        other => Ec2Error::auth_failure(other.to_string()),
    })?;
    crate::access_keys::touch(&state.db, &sig.credential.access_key_id).await?;
    Ok((
        owner.caller,
        Signed { presigned: sig.presigned_expires.is_some(), signature: sig.signature, valid_until, now },
    ))
}
