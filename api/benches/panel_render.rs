//! How long the control panel takes to render the instances page of a project
//! with 100 instances, through the whole controller router (session cookie,
//! in-process API call, JSON decoding, tera rendering), on SQLite. Also the
//! live-state endpoint the page polls, and the bare API list for comparison.
//!
//! `cargo bench -p kumo-api --bench panel_render`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use kumo_api::config::ControllerConfig;
use kumo_api::Controller;
use tower::ServiceExt;

const INSTANCES: u32 = 100;
const ROUNDS: usize = 300;

async fn call(router: &axum::Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(router: &axum::Router, what: &str, make: impl Fn() -> Request<Body>, needle: &str) {
    let (status, _, body) = call(router, make()).await;
    assert_eq!(status, StatusCode::OK, "{what}: {}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).matches(needle).count() >= INSTANCES as usize,
        "{what} lists every instance"
    );
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let (status, _, _) = call(router, make()).await;
        times.push(start.elapsed());
        assert_eq!(status, StatusCode::OK);
    }
    times.sort();
    println!(
        "{what:<44} {} bytes  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({ROUNDS} requests)",
        body.len(),
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = ControllerConfig {
        data_dir: dir.path().join("data"),
        database_url: Some(format!("sqlite://{}?mode=rwc", dir.path().join("kumo.db").display())),
        admin_password: Some("bench-password-1".into()),
        join_token: Some("join".into()),
        ..ControllerConfig::default()
    };
    let controller = Controller::start(config).await.unwrap();
    let router = controller.router();

    // Log in through the panel's form, as a browser does.
    let (_, headers, body) = call(&router, Request::get("/ui/login").body(Body::empty()).unwrap()).await;
    let login_cookie = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = String::from_utf8(body).unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let form = format!("username=admin&password=bench-password-1&csrf={csrf}");
    let req = Request::post("/ui/login")
        .header(header::COOKIE, &login_cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let (status, headers, _) = call(&router, req).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("kumo_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = session.trim_start_matches("kumo_session=").to_owned();

    // The default image `tiny` (a kernel image with two tiny files).
    let bearer = format!("Bearer {token}");
    let create = serde_json::json!({"name": "tiny", "kind": "kernel", "visibility": "public"});
    let req = Request::post("/v1/images")
        .header(header::AUTHORIZATION, &bearer)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(create.to_string()))
        .unwrap();
    let (status, _, body) = call(&router, req).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let image: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for role in ["kernel", "initrd"] {
        let req = Request::put(format!("/v1/images/{}/files/{role}", image["id"].as_str().unwrap()))
            .header(header::AUTHORIZATION, &bearer)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(format!("{role} bytes")))
            .unwrap();
        let (status, _, body) = call(&router, req).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }

    // 100 instances in the admin's project (no host: they stay pending, which
    // changes nothing for the list).
    let run = serde_json::json!({"name": "bench", "flavor": "mini", "count": INSTANCES});
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/instances")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(run.to_string()))
        .unwrap();
    let (status, _, body) = call(&router, req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));

    println!("panel render, {INSTANCES} instances, SQLite, in-process router (no socket):");
    let page = || Request::get("/ui/instances").header(header::COOKIE, &session).body(Body::empty()).unwrap();
    measure(&router, "GET /ui/instances (HTML page)", page, "data-state-of=").await;
    let live = || Request::get("/ui/instances.json").header(header::COOKIE, &session).body(Body::empty()).unwrap();
    measure(&router, "GET /ui/instances.json (live-state poll)", live, "\"state\"").await;
    let api = || {
        Request::get("/v1/instances?limit=1000")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    measure(&router, "GET /v1/instances (the API alone)", api, "\"flavor\"").await;
}
