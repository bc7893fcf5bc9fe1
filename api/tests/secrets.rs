//! Secrets at rest (issue 12 item 10): the JWT signing key and the agents'
//! tokens are sealed under a key file outside the database, the join token
//! and host tokens are kept as hashes; a database copy mints nothing.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{backends, cloud, cloud_on, Cloud, ADMIN_PASSWORD};
use kumo_api::auth::TokenKeys;
use kumo_api::config::ControllerConfig;
use kumo_api::sealing::KEY_FILE;
use kumo_api::Controller;
use kumo_wire::agent::{RegisterRequest, RegisterResponse};
use kumo_wire::api::Role;
use serde_json::json;
use sqlx::Row;

/// The controller's generated join token (no `join_token` in the configuration).
fn generated_join_token(c: &mut ControllerConfig) {
    c.join_token = None;
}

async fn try_register(c: &Cloud, join_token: &str, name: &str) -> (StatusCode, serde_json::Value) {
    let req = RegisterRequest {
        join_token: join_token.into(),
        name: name.into(),
        agent_url: "http://127.0.0.1:9".into(),
        capacity: common::CAPACITY,
        hypervisor: "qemu".into(),
        availability_zone: "zone-1".into(),
        volume_backends: vec![],
    };
    c.call(Method::POST, "/agent/v1/register", None, Some(serde_json::to_value(req).unwrap())).await
}

async fn register(c: &Cloud, join_token: &str, name: &str) -> RegisterResponse {
    let (s, b) = try_register(c, join_token, name).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    serde_json::from_value(b).unwrap()
}

/// Every `settings` row and every token column of `hosts`, as stored.
async fn rows_at_rest(c: &Cloud) -> Vec<(String, String)> {
    let pool = c.controller.state.db.pool();
    let mut rows = Vec::new();
    for r in sqlx::query("SELECT key, value FROM settings").fetch_all(pool).await.unwrap() {
        rows.push((format!("settings.{}", r.get::<String, _>("key")), r.get("value")));
    }
    for r in sqlx::query("SELECT name, token_hash, agent_token, agent_url FROM hosts").fetch_all(pool).await.unwrap() {
        let name: String = r.get("name");
        for col in ["token_hash", "agent_token", "agent_url"] {
            rows.push((format!("hosts.{col} of {name}"), r.get(col)));
        }
    }
    rows
}

/// An admin token signed with `key`, as someone holding a copy of the database would mint.
fn minted_admin_token(c: &Cloud, key: &[u8]) -> String {
    let admin = c.controller.state.keys.verify(&c.admin).unwrap();
    TokenKeys::from_secret(key, 600).issue(&admin.user_id, &admin.project_id, Role::Admin).unwrap().0
}

async fn stop(c: Cloud) -> (tempfile::TempDir, String) {
    let Cloud { controller, router, dir, db_url, .. } = c;
    drop(router);
    controller.stop().await;
    (dir, db_url)
}

#[tokio::test]
async fn no_secret_is_stored_in_plaintext_and_the_stored_values_mint_nothing() {
    for backend in backends() {
        let c = cloud(backend, generated_join_token).await;
        let join = std::fs::read_to_string(c.controller.state.config.data_dir.join("join-token")).unwrap();
        let join = join.trim();
        assert!(join.len() >= 40, "{join}");
        let member = c.tenant("acme").await;
        let host = register(&c, join, "host-1").await;
        assert!(!host.agent_token.is_empty());
        // The controller still opens what it sealed.
        let stored = c.controller.state.db.find_host("host-1").await.unwrap().unwrap();
        assert_eq!(c.controller.state.sealer.agent_token("host-1", &stored.agent_token).unwrap(), host.agent_token);

        let rows = rows_at_rest(&c).await;
        let keys: Vec<_> = rows.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.contains(&"settings.jwt_hs256_key_sealed") && keys.contains(&"settings.join_token_sha256"),
            "{keys:?}"
        );
        assert!(!keys.contains(&"settings.jwt_hs256_key") && !keys.contains(&"settings.join_token"), "{keys:?}");
        for (what, value) in &rows {
            for (name, secret) in [
                ("join token", join),
                ("agent token", host.agent_token.as_str()),
                ("host token", host.host_token.as_str()),
                ("admin token", c.admin.as_str()),
                ("member token", member.as_str()),
            ] {
                assert!(!value.contains(secret), "{what} holds the {name} in plaintext");
            }
            // Whatever is stored, used as a signing key, mints nothing.
            let minted = minted_admin_token(&c, value.as_bytes());
            let (s, b) = c.get("/v1/projects", &minted).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "a token signed with {what} was accepted: {b}");
        }
        // The real key does mint (the check above would catch a stored key).
        assert_eq!(c.get("/v1/projects", &c.admin).await.0, StatusCode::OK);
        // The join token works from its hash; a wrong one does not.
        let (s, _) = try_register(&c, "wrong", "host-2").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        register(&c, join, "host-2").await;
    }
}

#[tokio::test]
async fn an_install_with_plaintext_secrets_is_upgraded_at_start_and_keeps_working() {
    for backend in backends() {
        let c = cloud(backend, generated_join_token).await;
        let join = std::fs::read_to_string(c.controller.state.config.data_dir.join("join-token")).unwrap();
        let host = register(&c, join.trim(), "old-host").await;
        let old_token = minted_admin_token(&c, b"old-plaintext-key");
        let data_dir = c.controller.state.config.data_dir.clone();
        // Make the database look like an older version's: plaintext secrets, no sealed row,
        // the key file under its old name.
        {
            let pool = c.controller.state.db.pool();
            sqlx::query("DELETE FROM settings").execute(pool).await.unwrap();
            for (k, v) in [("jwt_hs256_key", "old-plaintext-key"), ("join_token", "old-join-token")] {
                sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2)")
                    .bind(k)
                    .bind(v)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            sqlx::query("UPDATE hosts SET agent_token = $1").bind(&host.agent_token).execute(pool).await.unwrap();
        }
        std::fs::rename(data_dir.join(KEY_FILE), data_dir.join(kumo_api::sealing::LEGACY_KEY_FILE)).unwrap();
        let (dir, db_url) = stop(c).await;

        let c = cloud_on(dir, db_url, generated_join_token).await;
        assert!(data_dir.join(KEY_FILE).exists());
        // Nothing plaintext is left.
        for (what, value) in rows_at_rest(&c).await {
            for secret in ["old-plaintext-key", "old-join-token", host.agent_token.as_str()] {
                assert!(!value.contains(secret), "{what} still holds {secret}");
            }
        }
        // The plaintext signing key was replaced: its tokens (minted from any old backup) are refused.
        let (s, b) = c.get("/v1/projects", &old_token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        assert_eq!(c.get("/v1/projects", &c.admin).await.0, StatusCode::OK);
        // The join token stays the same (agents have it in their configuration), and its file says it.
        assert_eq!(std::fs::read_to_string(data_dir.join("join-token")).unwrap().trim(), "old-join-token");
        register(&c, "old-join-token", "new-host").await;
        // The agent token was sealed and still opens to what the agent holds.
        let stored = c.controller.state.db.find_host("old-host").await.unwrap().unwrap();
        assert!(stored.agent_token.starts_with(kumo_api::sealing::SEALED_PREFIX));
        assert_eq!(c.controller.state.sealer.agent_token("old-host", &stored.agent_token).unwrap(), host.agent_token);
    }
}

fn config_on(dir: &tempfile::TempDir, db_url: &str) -> ControllerConfig {
    ControllerConfig {
        data_dir: dir.path().join("data"),
        database_url: Some(db_url.into()),
        admin_password: Some(ADMIN_PASSWORD.into()),
        ..ControllerConfig::default()
    }
}

#[tokio::test]
async fn restart_needs_the_same_key_file_and_says_so_otherwise() {
    for backend in backends() {
        let c = cloud(backend, generated_join_token).await;
        let join = std::fs::read_to_string(c.controller.state.config.data_dir.join("join-token")).unwrap();
        let host = register(&c, join.trim(), "host-1").await;
        let (s, key) = c.post("/v1/access-keys", &c.admin, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{key}");
        let admin = c.admin.clone();
        let data_dir = c.controller.state.config.data_dir.clone();
        let key_file = data_dir.join(KEY_FILE);
        let (dir, db_url) = stop(c).await;

        // Same key file: tokens, the agent token and the join token work as before.
        let c = cloud_on(dir, db_url, generated_join_token).await;
        assert_eq!(c.get("/v1/projects", &admin).await.0, StatusCode::OK);
        let stored = c.controller.state.db.find_host("host-1").await.unwrap().unwrap();
        assert_eq!(c.controller.state.sealer.agent_token("host-1", &stored.agent_token).unwrap(), host.agent_token);
        register(&c, join.trim(), "host-2").await;
        let (dir, db_url) = stop(c).await;

        // Another key file: a clear error, nothing rewritten.
        let good = std::fs::read(&key_file).unwrap();
        std::fs::write(&key_file, "cd".repeat(32)).unwrap();
        let err = Controller::start(config_on(&dir, &db_url)).await.unwrap_err().to_string();
        assert!(err.contains("is not the key the database's secrets were sealed with"), "{err}");
        assert!(err.contains(KEY_FILE), "{err}");

        // No key file: a clear error, and no new key is made behind the operator's back.
        std::fs::remove_file(&key_file).unwrap();
        let err = Controller::start(config_on(&dir, &db_url)).await.unwrap_err().to_string();
        assert!(err.contains("is missing") && err.contains("restore it"), "{err}");
        assert!(!key_file.exists());

        // The right file back: everything works again.
        std::fs::write(&key_file, good).unwrap();
        let c = cloud_on(dir, db_url, generated_join_token).await;
        assert_eq!(c.get("/v1/projects", &admin).await.0, StatusCode::OK);
    }
}
