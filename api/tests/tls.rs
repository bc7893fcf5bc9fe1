//! TLS on the controller's listener (issue 12): a real socket served with
//! certificates from `kumo_api::tls::generate`, real rustls clients. A client
//! that trusts the cloud's CA gets answers (API, login, panel); a plain-HTTP
//! client and one trusting another CA get nothing. The controller's own client
//! trusts `agent_ca_file` only.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{backends, cloud, ADMIN_PASSWORD};
use kumo_api::tls;
use serde_json::json;

/// A client that trusts only the CA in `ca`.
fn client_trusting(ca: &Path) -> reqwest::Client {
    tls::trusting(reqwest::Client::builder().timeout(Duration::from_secs(10)), ca).unwrap().build().unwrap()
}

/// The error and its causes on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// Serves `router` over TLS on a loopback port; returns its port, the
/// shutdown trigger and the server task.
async fn serve_tls(
    router: axum::Router,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> (u16, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tls::serve(listener, router, Some(config), async move {
        let _ = stopped.await;
    }));
    (port, stop, task)
}

#[tokio::test]
async fn the_listener_serves_https_to_clients_that_trust_the_cloud_ca_only() {
    for backend in backends() {
        let pki = tempfile::tempdir().unwrap();
        let made = tls::generate(pki.path(), "controller", &["kumo.test".into()]).unwrap();
        let other = tempfile::tempdir().unwrap();
        let foreign = tls::generate(other.path(), "controller", &[]).unwrap();
        let (cert, key) = (made.cert.clone(), made.key.clone());
        let cloud = cloud(backend, |c| {
            c.tls_cert_file = Some(cert);
            c.tls_key_file = Some(key);
        })
        .await;
        let server_tls = cloud.controller.state.config.server_tls().unwrap().expect("TLS configured");
        let (port, stop, server) = serve_tls(cloud.router.clone(), server_tls).await;

        let good = client_trusting(&made.ca_cert);
        for host in ["localhost", "127.0.0.1"] {
            let resp = good.get(format!("https://{host}:{port}/healthz")).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{backend} {host}");
        }
        // A login: a real JSON request, with the peer address the throttle needs.
        let resp = good
            .post(format!("https://localhost:{port}/v1/auth/tokens"))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{backend}: {}", resp.text().await.unwrap());
        // The panel knows it is served over TLS: its cookies are Secure.
        let resp = good.get(format!("https://localhost:{port}/ui/login")).send().await.unwrap();
        let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
        assert!(cookie.split("; ").any(|attr| attr == "Secure"), "{cookie}");

        // Plain HTTP on the TLS port gets no answer.
        let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let err = plain.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap_err();
        assert!(!err.is_timeout(), "plain HTTP is refused at once, not left hanging: {err:?}");
        // A client trusting another CA, or only the public roots, refuses the certificate.
        for (what, client) in [
            ("another CA", client_trusting(&foreign.ca_cert)),
            ("public roots", reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()),
        ] {
            let err = client.get(format!("https://localhost:{port}/healthz")).send().await.unwrap_err();
            let text = chain(&err);
            assert!(text.contains("invalid peer certificate: UnknownIssuer"), "{what}: {text}");
        }
        // A name the certificate does not carry is refused too.
        let misnamed = tls::trusting(reqwest::Client::builder(), &made.ca_cert)
            .unwrap()
            .resolve("elsewhere.test", ([127, 0, 0, 1], port).into())
            .build()
            .unwrap();
        let err = misnamed.get(format!("https://elsewhere.test:{port}/healthz")).send().await.unwrap_err();
        assert!(chain(&err).contains("certificate not valid for name \"elsewhere.test\""), "{}", chain(&err));

        // Graceful shutdown: the server returns once told to stop.
        stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server stops");
        result.unwrap().unwrap();
        assert!(good.get(format!("https://localhost:{port}/healthz")).send().await.is_err(), "nothing listens after");
    }
}

#[tokio::test]
async fn the_controller_trusts_only_agent_ca_file_when_it_calls_agents() {
    let pki = tempfile::tempdir().unwrap();
    let agent_cert = tls::generate(pki.path(), "agent", &[]).unwrap();
    let other = tempfile::tempdir().unwrap();
    let impostor = tls::generate(other.path(), "agent", &[]).unwrap();
    let ca = agent_cert.ca_cert.clone();
    let cloud = cloud("sqlite", |c| c.agent_ca_file = Some(ca)).await;
    let agent = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));

    let (port, _stop, _task) =
        serve_tls(agent.clone(), tls::server_config(&agent_cert.cert, &agent_cert.key).unwrap()).await;
    let resp = cloud.controller.state.http.get(format!("https://localhost:{port}/healthz")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");

    let (port, _stop, _task) = serve_tls(agent, tls::server_config(&impostor.cert, &impostor.key).unwrap()).await;
    let err = cloud.controller.state.http.get(format!("https://localhost:{port}/healthz")).send().await.unwrap_err();
    assert!(chain(&err).contains("invalid peer certificate: UnknownIssuer"), "{}", chain(&err));
}

#[tokio::test]
async fn a_bad_agent_ca_file_stops_the_controller_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("agent-ca.pem");
    std::fs::write(&bad, "nothing here\n").unwrap();
    let db_url = common::fresh_db_url("sqlite", dir.path()).await;
    let config = kumo_api::config::ControllerConfig {
        data_dir: dir.path().join("data"),
        database_url: Some(db_url),
        agent_ca_file: Some(bad.clone()),
        ..Default::default()
    };
    let err = kumo_api::Controller::start(config).await.unwrap_err();
    assert!(chain(&err).contains(&format!("{} holds no certificate in PEM form", bad.display())), "{}", chain(&err));
}
