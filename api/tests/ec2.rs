//! The EC2 Query API through the router: SigV4 against AWS's published test
//! vectors, access keys, XML shapes and error documents, idempotency, project
//! isolation. On SQLite and (when configured) PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use http_body_util::BodyExt;
use kumo_api::ec2::sigv4::{self, Credential};
use tower::ServiceExt;

const VECTOR_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn vector_credential() -> Credential {
    Credential {
        access_key_id: "AKIDEXAMPLE".into(),
        date: "20150830".into(),
        region: "us-east-1".into(),
        service: "service".into(),
    }
}

/// AWS's SigV4 test suite (aws-sig-v4-test-suite): get-vanilla,
/// get-vanilla-query-order-key-case, post-x-www-form-urlencoded.
#[test]
fn sigv4_matches_the_official_test_vectors() {
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8], &'a str);
    let cases: [Case<'_>; 3] = [
        ("GET", "", &[], b"", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        (
            "GET",
            "Param2=value2&Param1=value1",
            &[],
            b"",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "POST",
            "",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"Param1=value1",
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        ),
    ];
    for (method, query, extra, body, expected) in cases {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        let mut signed: Vec<String> = vec!["host".into(), "x-amz-date".into()];
        for (k, v) in extra {
            headers.insert(*k, HeaderValue::from_str(v).unwrap());
            signed.push((*k).to_owned());
        }
        signed.sort();
        let req = sigv4::Request { method, path: "/", query, headers: &headers, body };
        let auth = sigv4::sign(&req, &vector_credential(), VECTOR_SECRET, &signed, "20150830T123600Z");
        assert!(auth.ends_with(&format!("Signature={expected}")), "{method} {query}: {auth}");
        headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        let req = sigv4::Request { method, path: "/", query, headers: &headers, body };
        let sig = sigv4::parse(&req).unwrap();
        let now = sigv4::parse_amz_date("20150830T123600Z").unwrap();
        sigv4::verify(&sig, &req, VECTOR_SECRET, now, 900).unwrap();
        assert_eq!(sigv4::verify(&sig, &req, "another secret", now, 900), Err(sigv4::SigError::Mismatch));
        assert!(matches!(sigv4::verify(&sig, &req, VECTOR_SECRET, now + 901, 900), Err(sigv4::SigError::Expired(_))));
        let tampered = sigv4::Request { body: b"Param1=value2", ..req };
        if method == "POST" {
            assert_eq!(sigv4::verify(&sig, &tampered, VECTOR_SECRET, now, 900), Err(sigv4::SigError::Mismatch));
        }
    }
}

/// A client of the EC2 API with one access key.
struct Ec2<'a> {
    cloud: &'a Cloud,
    key: String,
    secret: String,
    region: String,
}

impl<'a> Ec2<'a> {
    async fn new(cloud: &'a Cloud, token: &str) -> Self {
        let (s, b) = cloud.call(Method::POST, "/v1/access-keys", Some(token), None).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        Ec2 {
            cloud,
            key: b["access_key_id"].as_str().unwrap().into(),
            secret: b["secret_access_key"].as_str().unwrap().into(),
            region: "kumo-1".into(),
        }
    }

    /// Sends a signed POST; `skew` moves the signing clock.
    async fn call_at(&self, params: &[(&str, &str)], skew_secs: i64, secret: &str) -> (StatusCode, String) {
        let mut all = vec![("Version", "2016-11-15")];
        all.extend_from_slice(params);
        let body = serde_urlencoded::to_string(&all).unwrap();
        let now = kumo_wire::Timestamp::now().millis() / 1000 + skew_secs;
        let amz_date = sigv4::format_amz_date(now);
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("localhost"));
        headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
        headers.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"));
        let signed: Vec<String> = vec!["content-type".into(), "host".into(), "x-amz-date".into()];
        let cred = Credential {
            access_key_id: self.key.clone(),
            date: amz_date[..8].to_owned(),
            region: self.region.clone(),
            service: "ec2".into(),
        };
        let req = sigv4::Request { method: "POST", path: "/", query: "", headers: &headers, body: body.as_bytes() };
        let auth = sigv4::sign(&req, &cred, secret, &signed, &amz_date);
        let mut builder = Request::builder().method(Method::POST).uri("/");
        for (k, v) in &headers {
            builder = builder.header(k, v);
        }
        let req = builder.header("authorization", auth).body(Body::from(body)).unwrap();
        let resp = self.cloud.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn call(&self, params: &[(&str, &str)]) -> (StatusCode, String) {
        self.call_at(params, 0, &self.secret.clone()).await
    }

    /// A call that must succeed.
    async fn ok(&self, params: &[(&str, &str)]) -> String {
        let (s, b) = self.call(params).await;
        assert_eq!(s, StatusCode::OK, "{params:?}: {b}");
        b
    }

    /// A call that must fail with `code`.
    async fn err(&self, params: &[(&str, &str)], status: StatusCode, code: &str) -> String {
        let (s, b) = self.call(params).await;
        assert_eq!(s, status, "{params:?}: {b}");
        assert_eq!(all(&b, "Code"), [code], "{params:?}: {b}");
        assert!(b.contains("<RequestID>"), "{b}");
        b
    }
}

/// Every text of `<tag>…</tag>` in document order.
fn all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_owned());
        rest = &after[j + close.len()..];
    }
    out
}

#[tokio::test]
async fn access_keys_are_shown_once_sealed_at_rest_and_revocable() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let ec2 = Ec2::new(&c, &t).await;
        assert_eq!(ec2.key.len(), 20);
        assert!(ec2.key.starts_with("AKIA"));
        assert_eq!(ec2.secret.len(), 40);
        let (_, list) = c.get("/v1/access-keys", &t).await;
        assert_eq!(list["items"][0]["access_key_id"], ec2.key.as_str());
        assert!(list["items"][0].get("secret_access_key").is_none(), "{list}");
        assert!(!list.to_string().contains(&ec2.secret));
        // At rest: sealed, and the sealing key is a 0600 file outside the database.
        let sealed: String = sqlx::query_scalar("SELECT secret_sealed FROM access_keys WHERE id = $1")
            .bind(&ec2.key)
            .fetch_one(c.controller.state.db.pool())
            .await
            .unwrap();
        assert!(!sealed.contains(&ec2.secret));
        let key_file = c.controller.state.config.data_dir.join(kumo_api::access_keys::KEY_FILE);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);

        let b = ec2.ok(&[("Action", "DescribeRegions")]).await;
        assert_eq!(all(&b, "regionName"), ["kumo-1"]);
        let (_, list) = c.get("/v1/access-keys", &t).await;
        assert!(list["items"][0]["last_used_at"].is_string(), "{list}");

        // Another user cannot revoke it; its owner can, and it stops working at once.
        let other = c.tenant("other").await;
        assert_eq!(c.delete(&format!("/v1/access-keys/{}", ec2.key), &other).await.0, StatusCode::NOT_FOUND);
        assert_eq!(c.delete(&format!("/v1/access-keys/{}", ec2.key), &t).await.0, StatusCode::NO_CONTENT);
        ec2.err(&[("Action", "DescribeRegions")], StatusCode::UNAUTHORIZED, "AuthFailure").await;
        assert_eq!(c.delete(&format!("/v1/access-keys/{}", ec2.key), &t).await.0, StatusCode::NOT_FOUND);
        assert_eq!(c.call(Method::POST, "/v1/access-keys", None, None).await.0, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn bad_signatures_unknown_keys_old_requests_and_wrong_regions_are_refused() {
    let c = cloud("sqlite", |_| {}).await;
    let t = c.tenant("acme").await;
    let mut ec2 = Ec2::new(&c, &t).await;
    let params = [("Action", "DescribeInstances")];
    let (s, b) = ec2.call_at(&params, 0, "not-the-secret").await;
    assert_eq!((s, all(&b, "Code")), (StatusCode::UNAUTHORIZED, vec!["AuthFailure".to_owned()]), "{b}");
    let (s, b) = ec2.call_at(&params, -16 * 60, &ec2.secret.clone()).await;
    assert_eq!((s, all(&b, "Code")), (StatusCode::BAD_REQUEST, vec!["RequestExpired".to_owned()]), "{b}");
    let (s, _) = ec2.call_at(&params, -14 * 60, &ec2.secret.clone()).await;
    assert_eq!(s, StatusCode::OK, "inside the allowed skew");
    ec2.region = "us-east-1".into();
    let b = ec2.err(&params, StatusCode::UNAUTHORIZED, "AuthFailure").await;
    assert!(b.contains("kumo-1"), "{b}");
    ec2.region = "kumo-1".into();
    ec2.key = "AKIAAAAAAAAAAAAAAAAA".into();
    ec2.err(&params, StatusCode::UNAUTHORIZED, "AuthFailure").await;
    // Unsigned.
    let req = Request::builder().method(Method::GET).uri("/?Action=DescribeRegions").body(Body::empty()).unwrap();
    let resp = c.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(all(&body, "Code"), ["MissingAuthenticationToken"], "{body}");
}

#[tokio::test]
async fn xml_shapes_and_client_errors() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        FakeAgent::register(&c, "host-a", CAPACITY).await;
        let ec2 = Ec2::new(&c, &t).await;
        let b = ec2.ok(&[("Action", "DescribeInstances")]).await;
        assert!(b.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>"), "{b}");
        assert!(b.contains("<reservationSet></reservationSet>"), "an empty list is still an element: {b}");
        let b = ec2.ok(&[("Action", "DescribeAvailabilityZones")]).await;
        assert_eq!(all(&b, "zoneName"), ["zone-1"]);
        let b = ec2.ok(&[("Action", "DescribeInstanceTypes"), ("InstanceType.1", "mini")]).await;
        assert_eq!(all(&b, "instanceType"), ["mini"]);
        let b = ec2.ok(&[("Action", "DescribeImages")]).await;
        assert_eq!(all(&b, "name"), ["tiny"]);
        assert_eq!(all(&b, "imageState"), ["available"]);

        ec2.err(&[("Action", "LaunchRockets")], StatusCode::BAD_REQUEST, "InvalidAction").await;
        ec2.err(
            &[("Action", "DescribeInstances"), ("InstanceId.1", "i-nope")],
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.Malformed",
        )
        .await;
        ec2.err(
            &[("Action", "DescribeInstances"), ("InstanceId.1", "i-0123456789abcdef0")],
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.NotFound",
        )
        .await;
        ec2.err(
            &[("Action", "DescribeInstances"), ("Filter.1.Name", "colour"), ("Filter.1.Value.1", "x")],
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        )
        .await;
        let run = |image: &'static str| {
            [
                ("Action", "RunInstances"),
                ("ImageId", image),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
            ]
        };
        ec2.err(&run("ami-0123456789abcdef0"), StatusCode::BAD_REQUEST, "InvalidAMIID.NotFound").await;
        ec2.err(&run("ami-x"), StatusCode::BAD_REQUEST, "InvalidAMIID.Malformed").await;
        let (_, imgs) = c.get("/v1/images", &t).await;
        let image = imgs["items"][0]["id"].as_str().unwrap().to_owned();
        let mut dry = run("ami-0123456789abcdef0").to_vec();
        dry[1].1 = &image;
        dry.push(("DryRun", "true"));
        ec2.err(&dry, StatusCode::PRECONDITION_FAILED, "DryRunOperation").await;
        let mut bad_type = run("ami-0123456789abcdef0").to_vec();
        bad_type[1].1 = &image;
        bad_type[2].1 = "enormous";
        ec2.err(&bad_type, StatusCode::BAD_REQUEST, "InvalidParameterValue").await;
        let mut no_key = run("ami-0123456789abcdef0").to_vec();
        no_key[1].1 = &image;
        no_key.push(("KeyName", "absent"));
        ec2.err(&no_key, StatusCode::BAD_REQUEST, "InvalidKeyPair.NotFound").await;
        ec2.err(
            &[("Action", "RunInstances"), ("ImageId", &image), ("InstanceType", "mini")],
            StatusCode::BAD_REQUEST,
            "MissingParameter",
        )
        .await;
        // Nothing was launched by any of those.
        let (_, list) = c.get("/v1/instances", &t).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");

        // Key pairs.
        let public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";
        use base64::Engine;
        let material = base64::engine::general_purpose::STANDARD.encode(public);
        let b = ec2.ok(&[("Action", "ImportKeyPair"), ("KeyName", "alice"), ("PublicKeyMaterial", &material)]).await;
        assert!(all(&b, "keyFingerprint")[0].starts_with("SHA256:"), "{b}");
        ec2.err(
            &[("Action", "ImportKeyPair"), ("KeyName", "alice"), ("PublicKeyMaterial", &material)],
            StatusCode::BAD_REQUEST,
            "InvalidKeyPair.Duplicate",
        )
        .await;
        let b = ec2.ok(&[("Action", "CreateKeyPair"), ("KeyName", "bob")]).await;
        assert!(all(&b, "keyMaterial")[0].contains("BEGIN OPENSSH PRIVATE KEY"), "{b}");
        let b = ec2.ok(&[("Action", "DescribeKeyPairs")]).await;
        assert_eq!(all(&b, "keyName"), ["alice", "bob"]);
        ec2.err(
            &[("Action", "DescribeKeyPairs"), ("KeyName.1", "carol")],
            StatusCode::BAD_REQUEST,
            "InvalidKeyPair.NotFound",
        )
        .await;
        ec2.ok(&[("Action", "DeleteKeyPair"), ("KeyName", "bob")]).await;
        let b = ec2.ok(&[("Action", "DescribeKeyPairs")]).await;
        assert_eq!(all(&b, "keyName"), ["alice"]);
    }
}

/// Reads an instance's EC2 state name.
async fn state_of(ec2: &Ec2<'_>, id: &str) -> String {
    let b = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", id)]).await;
    all(&all(&b, "instanceState")[0], "name")[0].clone()
}

#[tokio::test]
async fn run_instances_is_idempotent_and_the_lifecycle_shows_ec2_states() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let image = c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let ec2 = Ec2::new(&c, &t).await;
        use base64::Engine;
        let user_data = base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho hi\n");
        let run = [
            ("Action", "RunInstances"),
            ("ImageId", image.as_str()),
            ("InstanceType", "mini"),
            ("MinCount", "2"),
            ("MaxCount", "2"),
            ("UserData", user_data.as_str()),
            ("ClientToken", "token-1"),
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.1.Tag.1.Key", "Name"),
            ("TagSpecification.1.Tag.1.Value", "web"),
        ];
        let first = ec2.ok(&run).await;
        let ids = all(&first, "instanceId");
        assert_eq!(ids.len(), 2, "{first}");
        assert_eq!(all(&first, "clientToken"), ["token-1", "token-1"]);
        let again = ec2.ok(&run).await;
        assert_eq!(all(&again, "instanceId"), ids, "the same token returns the same instances");
        assert_eq!(all(&again, "reservationId"), all(&first, "reservationId"));
        let mut changed = run.to_vec();
        changed[3].1 = "1";
        ec2.err(&changed, StatusCode::BAD_REQUEST, "IdempotentParameterMismatch").await;
        let (_, list) = c.get("/v1/instances", &t).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 2, "launched once: {list}");
        c.wait_state(&t, &ids[0], "building").await;
        c.wait_state(&t, &ids[1], "building").await;
        let desired = agent.sync(&c, vec![]).await;
        assert!(desired.instances.iter().all(|i| i.spec.user_data.as_deref() == Some("#!/bin/sh\necho hi\n")));

        // Filters: tag and state; pagination.
        let b = ec2
            .ok(&[("Action", "DescribeInstances"), ("Filter.1.Name", "tag:Name"), ("Filter.1.Value.1", "we*")])
            .await;
        assert_eq!(all(&b, "instanceId").len(), 2);
        let b =
            ec2.ok(&[("Action", "DescribeInstances"), ("Filter.1.Name", "tag:Name"), ("Filter.1.Value.1", "db")]).await;
        assert!(all(&b, "instanceId").is_empty());
        agent.converge(&c).await;
        c.wait_state(&t, &ids[0], "running").await;
        c.wait_state(&t, &ids[1], "running").await;
        let b = ec2
            .ok(&[
                ("Action", "DescribeInstances"),
                ("Filter.1.Name", "instance-state-name"),
                ("Filter.1.Value.1", "running"),
            ])
            .await;
        assert_eq!(all(&b, "instanceId").len(), 2);
        assert!(b.contains("<instanceState><code>16</code><name>running</name></instanceState>"), "{b}");
        assert!(b.contains("<tagSet><item><key>Name</key><value>web</value></item></tagSet>"), "{b}");
        assert!(b.contains("<availabilityZone>zone-1</availabilityZone>"), "{b}");
        for _ in 0..4 {
            ec2.ok(&[
                ("Action", "RunInstances"),
                ("ImageId", &image),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
            ])
            .await;
        }
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut p = vec![("Action", "DescribeInstances"), ("MaxResults", "5")];
            if let Some(t) = &token {
                p.push(("NextToken", t.as_str()));
            }
            let b = ec2.ok(&p).await;
            seen.extend(all(&b, "instanceId"));
            token = all(&b, "nextToken").into_iter().next();
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
        ec2.err(
            &[("Action", "DescribeInstances"), ("NextToken", "bogus")],
            StatusCode::BAD_REQUEST,
            "InvalidNextToken",
        )
        .await;

        // Stop, start, reboot, terminate.
        let b = ec2.ok(&[("Action", "StopInstances"), ("InstanceId.1", &ids[0])]).await;
        assert!(b.contains("<currentState><code>64</code><name>stopping</name></currentState><previousState><code>16</code><name>running</name></previousState>"), "{b}");
        agent.converge(&c).await;
        c.wait_state(&t, &ids[0], "stopped").await;
        assert_eq!(state_of(&ec2, &ids[0]).await, "stopped");
        ec2.err(
            &[("Action", "RebootInstances"), ("InstanceId.1", &ids[0])],
            StatusCode::BAD_REQUEST,
            "IncorrectInstanceState",
        )
        .await;
        ec2.ok(&[("Action", "StartInstances"), ("InstanceId.1", &ids[0])]).await;
        agent.converge(&c).await;
        c.wait_state(&t, &ids[0], "running").await;
        ec2.ok(&[("Action", "RebootInstances"), ("InstanceId.1", &ids[0])]).await;
        ec2.err(
            &[("Action", "StopInstances"), ("InstanceId.1", &ids[0]), ("DryRun", "true")],
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
        )
        .await;
        agent.converge(&c).await;
        let b = ec2.ok(&[("Action", "TerminateInstances"), ("InstanceId.1", &ids[0]), ("InstanceId.2", &ids[1])]).await;
        assert_eq!(all(&b, "instanceId").len(), 2);
        assert!(b.contains("<name>shutting-down</name>"), "{b}");
        agent.converge(&c).await;
        c.wait_state(&t, &ids[0], "deleted").await;
        assert_eq!(state_of(&ec2, &ids[0]).await, "terminated", "terminated instances stay visible");
        let b = ec2.ok(&[("Action", "TerminateInstances"), ("InstanceId.1", &ids[0])]).await;
        assert!(
            b.contains("<currentState><code>48</code><name>terminated</name></currentState>"),
            "terminating twice succeeds: {b}"
        );
        let b = ec2.ok(&[("Action", "DescribeTags")]).await;
        assert!(!b.contains(&ids[0]), "a terminated instance's tags are not listed: {b}");
    }
}

#[tokio::test]
async fn another_projects_keys_see_and_touch_nothing() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t1 = c.tenant("acme").await;
        let t2 = c.tenant("rival").await;
        let image = c.kernel_image("tiny").await;
        FakeAgent::register(&c, "host-a", CAPACITY).await;
        let a = Ec2::new(&c, &t1).await;
        let b = Ec2::new(&c, &t2).await;
        let out = a
            .ok(&[
                ("Action", "RunInstances"),
                ("ImageId", &image),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("ClientToken", "same"),
            ])
            .await;
        let id = all(&out, "instanceId")[0].clone();
        a.ok(&[("Action", "CreateTags"), ("ResourceId.1", &id), ("Tag.1.Key", "owner"), ("Tag.1.Value", "acme")]).await;
        let vol = a.ok(&[("Action", "CreateVolume"), ("AvailabilityZone", "zone-1"), ("Size", "1")]).await;
        let vol = all(&vol, "volumeId")[0].clone();

        let seen = b.ok(&[("Action", "DescribeInstances")]).await;
        assert!(seen.contains("<reservationSet></reservationSet>"), "{seen}");
        assert!(b.ok(&[("Action", "DescribeVolumes")]).await.contains("<volumeSet></volumeSet>"));
        assert!(b.ok(&[("Action", "DescribeTags")]).await.contains("<tagSet></tagSet>"));
        b.err(
            &[("Action", "DescribeInstances"), ("InstanceId.1", &id)],
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.NotFound",
        )
        .await;
        b.err(
            &[("Action", "TerminateInstances"), ("InstanceId.1", &id)],
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.NotFound",
        )
        .await;
        b.err(
            &[("Action", "CreateTags"), ("ResourceId.1", &id), ("Tag.1.Key", "x")],
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.NotFound",
        )
        .await;
        b.err(&[("Action", "DeleteVolume"), ("VolumeId", &vol)], StatusCode::BAD_REQUEST, "InvalidVolume.NotFound")
            .await;
        b.err(
            &[("Action", "GetConsoleOutput"), ("InstanceId", &id)],
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.NotFound",
        )
        .await;
        // The same client token in another project is another launch.
        let theirs = b
            .ok(&[
                ("Action", "RunInstances"),
                ("ImageId", &image),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("ClientToken", "same"),
            ])
            .await;
        assert_ne!(all(&theirs, "instanceId")[0], id);
        assert_eq!(state_of(&a, &id).await, "pending", "untouched");
        let tags =
            a.ok(&[("Action", "DescribeTags"), ("Filter.1.Name", "resource-id"), ("Filter.1.Value.1", &id)]).await;
        assert_eq!(all(&tags, "key"), ["owner"]);
    }
}

#[tokio::test]
async fn volumes_attach_detach_snapshot_and_delete() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let image = c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let ec2 = Ec2::new(&c, &t).await;
        let out = ec2
            .ok(&[
                ("Action", "RunInstances"),
                ("ImageId", &image),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
            ])
            .await;
        let inst = all(&out, "instanceId")[0].clone();
        c.wait_state(&t, &inst, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &inst, "running").await;

        ec2.err(
            &[("Action", "CreateVolume"), ("AvailabilityZone", "mars-1"), ("Size", "1")],
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        )
        .await;
        let create = [
            ("Action", "CreateVolume"),
            ("AvailabilityZone", "zone-1"),
            ("Size", "2"),
            ("ClientToken", "v1"),
            ("TagSpecification.1.ResourceType", "volume"),
            ("TagSpecification.1.Tag.1.Key", "role"),
            ("TagSpecification.1.Tag.1.Value", "data"),
        ];
        let b = ec2.ok(&create).await;
        let vol = all(&b, "volumeId")[0].clone();
        assert_eq!(all(&b, "status"), ["creating"]);
        assert_eq!(all(&ec2.ok(&create).await, "volumeId"), std::slice::from_ref(&vol), "CreateVolume is idempotent");
        agent.converge_storage(&c, None).await;
        let b = ec2.ok(&[("Action", "DescribeVolumes"), ("VolumeId.1", &vol)]).await;
        assert_eq!(all(&b, "status"), ["available"], "{b}");
        assert!(b.contains("<attachmentSet></attachmentSet>"), "{b}");
        let b = ec2
            .ok(&[("Action", "AttachVolume"), ("VolumeId", &vol), ("InstanceId", &inst), ("Device", "/dev/sdf")])
            .await;
        assert_eq!(all(&b, "device"), ["/dev/vdb"], "{b}");
        agent.converge_storage(&c, None).await;
        let b = ec2
            .ok(&[
                ("Action", "DescribeVolumes"),
                ("Filter.1.Name", "attachment.instance-id"),
                ("Filter.1.Value.1", &inst),
            ])
            .await;
        assert_eq!(all(&b, "status"), ["in-use", "attached"], "{b}");
        ec2.err(&[("Action", "DeleteVolume"), ("VolumeId", &vol)], StatusCode::BAD_REQUEST, "VolumeInUse").await;
        let b = ec2.ok(&[("Action", "CreateSnapshot"), ("VolumeId", &vol), ("Description", "nightly")]).await;
        let snap = all(&b, "snapshotId")[0].clone();
        assert_eq!(all(&b, "status"), ["pending"]);
        agent.converge_storage(&c, None).await;
        let b = ec2.ok(&[("Action", "DescribeSnapshots"), ("Owner.1", "self")]).await;
        assert_eq!(
            (all(&b, "snapshotId"), all(&b, "status")),
            (vec![snap.clone()], vec!["completed".to_owned()]),
            "{b}"
        );
        ec2.ok(&[("Action", "DetachVolume"), ("VolumeId", &vol)]).await;
        agent.converge_storage(&c, None).await;
        ec2.ok(&[("Action", "DeleteSnapshot"), ("SnapshotId", &snap)]).await;
        ec2.ok(&[("Action", "DeleteVolume"), ("VolumeId", &vol)]).await;
        agent.converge_storage(&c, None).await;
        ec2.err(
            &[("Action", "DescribeVolumes"), ("VolumeId.1", &vol)],
            StatusCode::BAD_REQUEST,
            "InvalidVolume.NotFound",
        )
        .await;
        ec2.err(
            &[("Action", "DescribeVolumes"), ("VolumeId.1", "vol-1")],
            StatusCode::BAD_REQUEST,
            "InvalidVolumeID.Malformed",
        )
        .await;
        let b = ec2.ok(&[("Action", "DescribeSnapshots")]).await;
        assert!(b.contains("<snapshotSet></snapshotSet>"), "{b}");
    }
}

#[tokio::test]
async fn security_groups_addresses_vpcs_and_subnets_map_onto_kumo_networks() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let image = c.kernel_image("tiny").await;
        FakeAgent::register(&c, "host-a", CAPACITY).await;
        let ec2 = Ec2::new(&c, &t).await;
        let (s, net) = c.post("/v1/networks", &t, serde_json::json!({"name": "back", "cidr": "10.20.0.0/24"})).await;
        assert_eq!(s, StatusCode::CREATED, "{net}");
        let hex = net["id"].as_str().unwrap().trim_start_matches("net-").to_owned();
        let b = ec2
            .ok(&[("Action", "DescribeVpcs"), ("Filter.1.Name", "cidr"), ("Filter.1.Value.1", "10.20.0.0/24")])
            .await;
        assert_eq!(all(&b, "vpcId"), [format!("vpc-{hex}")], "{b}");
        let b = ec2.ok(&[("Action", "DescribeSubnets"), ("SubnetId.1", &format!("subnet-{hex}"))]).await;
        assert_eq!(all(&b, "vpcId"), [format!("vpc-{hex}")], "{b}");
        assert_eq!(all(&b, "cidrBlock"), ["10.20.0.0/24"]);
        ec2.err(
            &[("Action", "DescribeSubnets"), ("SubnetId.1", "subnet-0123456789abcdef0")],
            StatusCode::BAD_REQUEST,
            "InvalidSubnetID.NotFound",
        )
        .await;

        let b = ec2
            .ok(&[("Action", "CreateSecurityGroup"), ("GroupName", "web"), ("GroupDescription", "web servers")])
            .await;
        let sg = all(&b, "groupId")[0].clone();
        ec2.err(
            &[("Action", "CreateSecurityGroup"), ("GroupName", "web"), ("GroupDescription", "again")],
            StatusCode::BAD_REQUEST,
            "InvalidGroup.Duplicate",
        )
        .await;
        let ssh = [
            ("Action", "AuthorizeSecurityGroupIngress"),
            ("GroupId", sg.as_str()),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "22"),
            ("IpPermissions.1.ToPort", "22"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ];
        ec2.ok(&ssh).await;
        ec2.err(&ssh, StatusCode::BAD_REQUEST, "InvalidPermission.Duplicate").await;
        let b = ec2.ok(&[("Action", "DescribeSecurityGroups"), ("GroupId.1", &sg)]).await;
        assert!(b.contains("<ipPermissions><item><ipProtocol>tcp</ipProtocol><fromPort>22</fromPort><toPort>22</toPort><groups></groups><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges>"), "{b}");
        ec2.err(
            &[("Action", "DescribeSecurityGroups"), ("GroupId.1", "sg-nope")],
            StatusCode::BAD_REQUEST,
            "InvalidGroupId.Malformed",
        )
        .await;

        // Launch into the subnet with the group.
        let out = ec2
            .ok(&[
                ("Action", "RunInstances"),
                ("ImageId", &image),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("SecurityGroupId.1", &sg),
                ("SubnetId", &format!("subnet-{hex}")),
            ])
            .await;
        let inst = all(&out, "instanceId")[0].clone();
        let (_, shown) = c.get(&format!("/v1/instances/{inst}"), &t).await;
        assert_eq!(shown["security_groups"], serde_json::json!(["web"]), "{shown}");
        ec2.err(&[("Action", "DeleteSecurityGroup"), ("GroupId", &sg)], StatusCode::BAD_REQUEST, "DependencyViolation")
            .await;

        // Elastic IPs need the admin's external network.
        let (s, b) = c
            .post(
                "/v1/networks",
                &c.admin,
                serde_json::json!({"name": "public", "cidr": "203.0.113.0/29", "external": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let b = ec2.ok(&[("Action", "AllocateAddress"), ("Domain", "vpc")]).await;
        let alloc = all(&b, "allocationId")[0].clone();
        assert!(all(&b, "publicIp")[0].starts_with("203.0.113."), "{b}");
        let b = ec2.ok(&[("Action", "AssociateAddress"), ("AllocationId", &alloc), ("InstanceId", &inst)]).await;
        let assoc = all(&b, "associationId")[0].clone();
        let b = ec2.ok(&[("Action", "DescribeAddresses")]).await;
        assert_eq!((all(&b, "instanceId"), all(&b, "associationId")), (vec![inst.clone()], vec![assoc.clone()]), "{b}");
        ec2.err(
            &[("Action", "ReleaseAddress"), ("AllocationId", &alloc)],
            StatusCode::BAD_REQUEST,
            "InvalidIPAddress.InUse",
        )
        .await;
        ec2.ok(&[("Action", "DisassociateAddress"), ("AssociationId", &assoc)]).await;
        ec2.ok(&[("Action", "ReleaseAddress"), ("AllocationId", &alloc)]).await;
        assert!(ec2.ok(&[("Action", "DescribeAddresses")]).await.contains("<addressesSet></addressesSet>"));

        // Another project sees none of it.
        let t2 = c.tenant("rival").await;
        let other = Ec2::new(&c, &t2).await;
        other
            .err(
                &[("Action", "DescribeSecurityGroups"), ("GroupId.1", &sg)],
                StatusCode::BAD_REQUEST,
                "InvalidGroup.NotFound",
            )
            .await;
        other
            .err(
                &[("Action", "DescribeVpcs"), ("VpcId.1", &format!("vpc-{hex}"))],
                StatusCode::BAD_REQUEST,
                "InvalidVpcID.NotFound",
            )
            .await;

        let revoke = [
            ("Action", "RevokeSecurityGroupIngress"),
            ("GroupId", sg.as_str()),
            ("IpProtocol", "tcp"),
            ("FromPort", "22"),
            ("ToPort", "22"),
            ("CidrIp", "0.0.0.0/0"),
        ];
        ec2.ok(&revoke).await;
        ec2.err(&revoke, StatusCode::BAD_REQUEST, "InvalidPermission.NotFound").await;
    }
}
