//! Issue 15, item 2: one typed error, mapped once to the native API and once
//! to EC2. A backend that fails is a 503 (retry later), not a 500 (a bug);
//! the EC2 adapter picks its codes from the error's variant, never from its
//! message.

#![allow(clippy::unwrap_used)] // Test helpers: a failure is a test failure.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::common::{backends, cloud, Cloud};
use crate::ec2::Ec2;

/// The `api/src/ec2` files (path relative to `api/src/ec2`, text without
/// its `#[cfg(test)]` modules).
fn ec2_sources() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
                out.push((rel, code));
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join("ec2");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

/// The lines of `code` that recover an error's meaning from its text: a
/// match guard on an error variant (`ApiError::Conflict(m) if …`), or a
/// string search on a message (`m.contains(…)`, `message.starts_with(…)`,
/// `e.to_string().contains(…)`).
fn message_matches(code: &str) -> Vec<String> {
    const MESSAGES: [&str; 6] = ["m", "msg", "message", "why", "detail", "to_string()"];
    const SEARCHES: [&str; 5] = ["contains(", "starts_with(", "ends_with(", "find(", "matches("];
    let mut found = Vec::new();
    for line in code.lines() {
        // A guard whose pattern names an error type.
        let guard = [") if ", "} if "]
            .iter()
            .any(|g| line.match_indices(g).any(|(at, _)| ["Error::", "Error("].iter().any(|e| line[..at].contains(e))));
        let search = MESSAGES.iter().any(|m| {
            SEARCHES.iter().any(|s| {
                line.match_indices(&format!("{m}.{s}")).any(|(at, _)| {
                    let before = line[..at].chars().next_back();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_') || m.starts_with("to_string")
                })
            })
        });
        if guard || search {
            found.push(line.trim().to_owned());
        }
    }
    found
}

#[test]
fn the_ec2_adapter_matches_no_error_messages() {
    let sources = ec2_sources();
    assert!(sources.iter().any(|(f, _)| f == "errors.rs") && sources.len() > 10, "read the adapter: {}", sources.len());
    let found: Vec<String> = sources
        .iter()
        .flat_map(|(file, code)| message_matches(code).into_iter().map(move |l| format!("{file}: {l}")))
        .collect();
    assert!(
        found.is_empty(),
        "the EC2 adapter reads error messages (match a typed ApiError variant instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_message_check_finds_what_the_adapter_used_to_do() {
    for old in [
        r#"ApiError::Conflict(m) if m.contains("no free addresses") => {"#,
        r#"ApiError::NotFound(m) if m.starts_with("security group") => x,"#,
        r#".find(|(prefix, _)| m.starts_with(prefix))"#,
        r#"Err(DbError::Corrupt(m)) if m.contains("tags") => {"#,
        r#"Err(e) if e.to_string().contains("in use") => {"#,
    ] {
        assert_eq!(message_matches(old).len(), 1, "{old}");
    }
    for fine in [
        r#"ApiError::Conflict(m) => Ec2Error::client("IncorrectState", m),"#,
        r#"ApiError::NotFound { kind, .. } => Self::client(not_found_code(kind), message),"#,
        r#"let keep = ids.is_empty() || ids.contains(&m.volume_id);"#,
        r#"if !k.starts_with("X-Amz-") {"#,
        r#"Some(t) if t.len() > 64 => return Err(Ec2Error::invalid_value("too long")),"#,
    ] {
        assert_eq!(message_matches(fine), Vec::<String>::new(), "{fine}");
    }
}

/// Makes the image store's directory unusable: a plain file where it was.
fn break_image_store(c: &Cloud) {
    let images = c.controller.state.config.data_dir.join("images");
    std::fs::remove_dir_all(&images).unwrap();
    std::fs::write(&images, b"not a directory").unwrap();
}

/// A tenant's own image with no files yet.
async fn private_image(c: &Cloud, token: &str, name: &str) -> String {
    let (s, img) = c.post("/v1/images", token, json!({"name": name, "kind": "kernel"})).await;
    assert_eq!(s, StatusCode::CREATED, "{img}");
    img["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_failing_image_store_is_503_on_both_apis() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let image = private_image(&c, &t, "mine").await;
        let other = private_image(&c, &t, "other").await;
        let ec2 = Ec2::new(&c, &t).await;
        break_image_store(&c);

        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!("/v1/images/{image}/files/kernel"))
            .header("authorization", format!("Bearer {t}"))
            .header("content-type", "application/octet-stream")
            .body(Body::from("kernel bytes"))
            .unwrap();
        let (s, b) = c.send(req).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{backend}: {b}");
        assert_eq!(b["code"], "service_unavailable", "{backend}: {b}");
        assert!(!b["message"].as_str().unwrap().contains("data/images"), "paths stay in the log: {b}");

        let (s, b) = c.delete(&format!("/v1/images/{other}"), &t).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{backend}: {b}");

        let b = ec2
            .err(&[("Action", "DeregisterImage"), ("ImageId", &image)], StatusCode::SERVICE_UNAVAILABLE, "Unavailable")
            .await;
        assert!(b.contains("image store is unavailable"), "{backend}: {b}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_503() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let (s, b) = c.get("/v1/volumes", &t).await;
        assert_eq!(s, StatusCode::OK, "{backend}: {b}");
        c.controller.state.db.pool().close().await;
        let (s, b) = c.get("/v1/volumes", &t).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{backend}: {b}");
        assert_eq!(b["code"], "service_unavailable", "{backend}: {b}");
        assert_eq!(b["message"], "the database is unavailable", "{backend}: {b}");
    }
}

/// The typed variants pick EC2's codes: a name taken, a resource in use, the
/// project's default group, a pool run dry, a quota per resource.
#[tokio::test]
async fn typed_errors_pick_ec2_codes() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let ec2 = Ec2::new(&c, &t).await;
        let create = [("Action", "CreateSecurityGroup"), ("GroupName", "web"), ("GroupDescription", "w")];
        ec2.ok(&create).await;
        ec2.err(&create, StatusCode::BAD_REQUEST, "InvalidGroup.Duplicate").await;
        let reserved = [("Action", "CreateSecurityGroup"), ("GroupName", "default"), ("GroupDescription", "d")];
        ec2.err(&reserved, StatusCode::BAD_REQUEST, "InvalidGroup.Duplicate").await;
        ec2.ok(&[("Action", "DescribeSecurityGroups")]).await;
        ec2.err(
            &[("Action", "DeleteSecurityGroup"), ("GroupName", "default")],
            StatusCode::BAD_REQUEST,
            "CannotDelete",
        )
        .await;
        let missing = [("Action", "DeleteSecurityGroup"), ("GroupId", "sg-0123456789abcdef0")];
        ec2.err(&missing, StatusCode::BAD_REQUEST, "InvalidGroup.NotFound").await;

        // No external network: the floating IP pool is empty.
        ec2.err(&[("Action", "AllocateAddress"), ("Domain", "vpc")], StatusCode::BAD_REQUEST, "AddressLimitExceeded")
            .await;
        // A quota per resource: security groups.
        let (s, b) =
            c.call(Method::PUT, "/v1/projects/acme/quotas", Some(&c.admin), Some(json!({"security_groups": 2}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let third = [("Action", "CreateSecurityGroup"), ("GroupName", "db"), ("GroupDescription", "d")];
        ec2.err(&third, StatusCode::BAD_REQUEST, "SecurityGroupLimitExceeded").await;
        let (s, b) = c.post("/v1/security-groups", &t, json!({"name": "db", "description": "d"})).await;
        assert_eq!((s, b["code"].as_str()), (StatusCode::FORBIDDEN, Some("quota_exceeded")), "{b}");
        assert!(b["message"].as_str().unwrap().starts_with("quota exceeded for security_groups"), "{b}");
    }
}
