//! Entity tags for JSON reads: a `GET` answered `200` with a JSON body gets an `ETag` (a hash
//! of the body), and a request whose `If-None-Match` names that tag gets `304 Not Modified`
//! without the body. The panel's live poll (through the browser's cache) and any client that
//! polls (`--wait`) then move a few bytes instead of a page while nothing changed.
//! The tag is computed from the body, so it is exact whatever changed the answer (a state, an
//! address, a tag), and different controllers agree on it.

use std::hash::{Hash, Hasher};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// Larger bodies are passed through untagged (they are streamed, not buffered).
const MAX_TAGGED: u64 = 4 * 1024 * 1024;

/// The middleware (`axum::middleware::from_fn(etag::tag)`).
pub async fn tag(req: Request, next: Next) -> Response {
    if req.method() != Method::GET {
        return next.run(req).await;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK || resp.headers().contains_key(header::ETAG) || !is_json(resp.headers()) {
        return resp;
    }
    if !resp.body().size_hint().exact().is_some_and(|n| n <= MAX_TAGGED) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_TAGGED as usize).await else {
        // An exact-size body that fails to collect: nothing sensible to send but an error.
        return Response::builder().status(StatusCode::INTERNAL_SERVER_ERROR).body(Body::empty()).unwrap_or_default();
    };
    let etag = etag_of(&bytes);
    if !parts.headers.contains_key(header::CACHE_CONTROL) {
        // Stored by browsers, but always revalidated: a tenant's data is never served stale.
        parts.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    }
    if if_none_match.as_ref().and_then(|v| v.to_str().ok()).is_some_and(|v| matches(v, &etag)) {
        let mut not_modified = Response::new(Body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [header::CACHE_CONTROL, header::VARY] {
            if let Some(v) = parts.headers.get(&name) {
                not_modified.headers_mut().insert(name, v.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(&etag) {
            not_modified.headers_mut().insert(header::ETAG, v);
        }
        return not_modified;
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        parts.headers.insert(header::ETAG, v);
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"))
}

/// A strong tag: 64 bits of SipHash over the body (a collision between two versions of one
/// answer is a one in 2^64 chance; its cost would be one stale poll).
pub fn etag_of(body: &[u8]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

/// Whether an `If-None-Match` value names `etag` (weak comparison, `*` matches any).
fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_with_the_body_and_match_lists_and_weak_forms() {
        let a = etag_of(br#"{"items":[]}"#);
        let b = etag_of(br#"{"items":[1]}"#);
        assert_ne!(a, b);
        assert_eq!(a, etag_of(br#"{"items":[]}"#));
        assert!(matches(&a, &a));
        assert!(matches(&format!("\"x\", W/{a}"), &a));
        assert!(matches("*", &a));
        assert!(!matches(&b, &a));
    }
}
