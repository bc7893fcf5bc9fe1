//! TLS between the agent and the controller (issue 12): the agent trusts only
//! `controller_ca_file`, so a controller with a certificate from another CA
//! never sees a request (no join token, no host token); its own listener
//! serves HTTPS with `tls_cert_file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kumo_agent::hypervisor::test_node_uri;
use kumo_agent::AgentConfig;

use super::fake_controller::{FakeController, JOIN_TOKEN};
use super::RunningAgent;

/// A CA and a server certificate it signed for localhost and 127.0.0.1.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(tag: &str) -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("test CA {tag}"));
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("leaf");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        cert: write("server.pem", leaf.pem()),
        key: write("server-key.pem", key.serialize_pem()),
        _dir: dir,
    }
}

fn server_tls(pki: &Pki) -> Arc<rustls::ServerConfig> {
    kumo_agent::tls::server_config(&pki.cert, &pki.key).expect("server config")
}

/// An agent configuration for an https fake controller, trusting `ca`.
fn https_config(fake: &FakeController, state_dir: &Path, ca: &Path) -> AgentConfig {
    let env = [
        ("KUMO_AGENT_CONTROLLER_URL", fake.url()),
        ("KUMO_AGENT_CONTROLLER_CA_FILE", ca.display().to_string()),
        ("KUMO_AGENT_JOIN_TOKEN", JOIN_TOKEN.to_owned()),
        ("KUMO_AGENT_LISTEN", "127.0.0.1:0".to_owned()),
        ("KUMO_AGENT_LIBVIRT_URI", test_node_uri(state_dir).expect("node")),
        ("KUMO_AGENT_STATE_DIR", state_dir.display().to_string()),
        ("KUMO_AGENT_SYNC_WAIT_MS", "300".to_owned()),
    ];
    AgentConfig::load(None, env.map(|(k, v)| (k.to_owned(), v))).expect("config")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_never_talks_to_a_controller_whose_certificate_another_ca_signed() {
    let (ours, theirs) = (pki("ours"), pki("theirs"));
    let impostor = FakeController::start_with(Some(server_tls(&theirs))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = RunningAgent::start_config(https_config(&impostor, dir.path(), &ours.ca)).await;

    // Wait until the agent has tried (and failed) to enrol, and a while more.
    let mut health = serde_json::Value::Null;
    for _ in 0..100 {
        health = reqwest::get(format!("{}/healthz", agent.url)).await.expect("healthz").json().await.expect("json");
        if !health["last_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let error = health["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("invalid peer certificate: UnknownIssuer"), "{health}");
    {
        let inner = impostor.lock();
        assert_eq!(inner.requests, 0, "no request (and so no join token) reached the impostor");
        assert!(inner.registrations.is_empty());
    }
    assert!(!dir.path().join("host.json").exists(), "not registered");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_enrols_over_tls_and_serves_its_own_listener_over_tls() {
    let ours = pki("ours");
    let fake = FakeController::start_with(Some(server_tls(&ours))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = https_config(&fake, dir.path(), &ours.ca);
    config.tls_cert_file = Some(ours.cert.clone());
    config.tls_key_file = Some(ours.key.clone());
    let agent = RunningAgent::start_config(config).await;
    fake.wait_report("first sync over TLS", |_| true).await;
    let agent_url = fake.lock().registrations[0].agent_url.clone();
    assert!(agent_url.starts_with("https://127.0.0.1:"), "{agent_url}");
    assert_eq!(agent_url, agent.url);

    // The controller (trusting the cloud CA) reaches the agent over https; plain HTTP gets nothing.
    let trusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ours.ca).expect("ca")).expect("pem"))
        .build()
        .expect("client");
    let resp = trusting.get(format!("{agent_url}/healthz")).send().await.expect("healthz over https");
    assert_eq!(resp.status(), 200);
    let plain = agent_url.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err(), "plain HTTP is not served");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_certificate_files_stop_the_agent_with_their_name() {
    let ours = pki("ours");
    let fake = FakeController::start_with(Some(server_tls(&ours))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing-ca.pem");
    let err = kumo_agent::Agent::start(https_config(&fake, dir.path(), &missing)).await.expect_err("missing CA");
    assert_eq!(err.to_string(), format!("cannot read CA certificate {}", missing.display()));
    let mut config = https_config(&fake, dir.path(), &ours.ca);
    config.tls_cert_file = Some(ours.cert.clone());
    config.tls_key_file = Some(ours.cert.clone());
    let err = kumo_agent::Agent::start(config).await.expect_err("a certificate as the key");
    assert_eq!(err.to_string(), format!("{} holds no private key in PEM form", ours.cert.display()));
}
