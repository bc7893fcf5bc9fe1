//! JSON reads carry an ETag; `If-None-Match` with it answers 304 without a body until the answer changes.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{backends, cloud};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(c: &common::Cloud, path: &str, token: &str, tag: Option<&str>) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut req = Request::get(path).header("authorization", format!("Bearer {token}"));
    if let Some(t) = tag {
        req = req.header(header::IF_NONE_MATCH, t);
    }
    let resp = c.router.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let etag = resp.headers().get(header::ETAG).map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, etag, body)
}

#[tokio::test]
async fn instance_lists_answer_not_modified_until_an_instance_changes() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let web = c.run(&t, "web", "mini").await;
        // No host: once the scheduler has decided (`error`), nothing changes it.
        c.wait_state(&t, web["id"].as_str().unwrap(), "error").await;
        let (s, tag, body) = get(&c, "/v1/instances", &t, None).await;
        assert_eq!(s, StatusCode::OK, "{backend}");
        let tag = tag.expect("an ETag on a JSON read");
        assert!(!body.is_empty());
        let (s, again, body) = get(&c, "/v1/instances", &t, Some(&tag)).await;
        assert_eq!((s, again.as_deref(), body.len()), (StatusCode::NOT_MODIFIED, Some(tag.as_str()), 0), "{backend}");
        // Another tenant's identical-looking request gets its own answer, never a 304 on our tag.
        let other = c.tenant("other").await;
        let (s, _, _) = get(&c, "/v1/instances", &other, Some(&tag)).await;
        assert_eq!(s, StatusCode::OK, "{backend}");
        // A second instance changes the list: a full answer with a new tag.
        c.run(&t, "db", "mini").await;
        let (s, newer, body) = get(&c, "/v1/instances", &t, Some(&tag)).await;
        assert_eq!(s, StatusCode::OK, "{backend}");
        assert_ne!(newer.unwrap(), tag);
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let items = page.get("instances").or_else(|| page.get("items")).and_then(|v| v.as_array()).unwrap();
        assert_eq!(items.len(), 2, "{backend}: {page}");
        // Errors carry no tag.
        let (s, tag, _) = get(&c, "/v1/instances/i-00000000000000000", &t, None).await;
        assert_eq!((s, tag), (StatusCode::NOT_FOUND, None), "{backend}");
    }
}
