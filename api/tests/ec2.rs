//! The EC2 Query API through the router: SigV4 against AWS's published test
//! vectors, access keys, XML shapes and error documents, idempotency, project
//! isolation. On SQLite and (when configured) PostgreSQL.

#![allow(clippy::unwrap_used)]

use crate::common;

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

/// A client of the EC2 API with one access key (also used by `ec2_vpc` and `egress`).
pub(crate) struct Ec2<'a> {
    cloud: &'a Cloud,
    key: String,
    secret: String,
    region: String,
    service: String,
}

impl<'a> Ec2<'a> {
    pub(crate) async fn new(cloud: &'a Cloud, token: &str) -> Self {
        let (s, b) = cloud.call(Method::POST, "/v1/access-keys", Some(token), None).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        Ec2 {
            cloud,
            key: b["access_key_id"].as_str().unwrap().into(),
            secret: b["secret_access_key"].as_str().unwrap().into(),
            region: "kumo-1".into(),
            service: "ec2".into(),
        }
    }

    /// Sends a signed POST; `skew` moves the signing clock.
    async fn call_at(&self, params: &[(&str, &str)], skew_secs: i64, secret: &str) -> (StatusCode, String) {
        let version = if self.service == "sts" { "2011-06-15" } else { "2016-11-15" };
        let mut all = vec![("Version", version)];
        all.extend_from_slice(params);
        let body = serde_urlencoded::to_string(&all).unwrap();
        let now = kumo_wire::Timestamp::now().millis() / 1000 + skew_secs;
        let amz_date = sigv4::format_amz_date(now);
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("localhost"));
        headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
        headers.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"));
        // Like boto3: a fresh signed invocation id, so two identical calls never share a signature.
        let invocation = kumo_wire::InstanceId::generate().as_str().to_owned();
        headers.insert("amz-sdk-invocation-id", HeaderValue::from_str(&invocation).unwrap());
        let signed: Vec<String> =
            vec!["amz-sdk-invocation-id".into(), "content-type".into(), "host".into(), "x-amz-date".into()];
        let cred = Credential {
            access_key_id: self.key.clone(),
            date: amz_date[..8].to_owned(),
            region: self.region.clone(),
            service: self.service.clone(),
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

    /// The same access key, signing requests to another controller replica.
    pub(crate) fn through<'b>(&self, cloud: &'b Cloud) -> Ec2<'b> {
        Ec2 {
            cloud,
            key: self.key.clone(),
            secret: self.secret.clone(),
            region: self.region.clone(),
            service: self.service.clone(),
        }
    }

    pub(crate) async fn call(&self, params: &[(&str, &str)]) -> (StatusCode, String) {
        self.call_at(params, 0, &self.secret.clone()).await
    }

    /// A call that must succeed.
    pub(crate) async fn ok(&self, params: &[(&str, &str)]) -> String {
        let (s, b) = self.call(params).await;
        assert_eq!(s, StatusCode::OK, "{params:?}: {b}");
        b
    }

    /// A call that must fail with `code`.
    pub(crate) async fn err(&self, params: &[(&str, &str)], status: StatusCode, code: &str) -> String {
        let (s, b) = self.call(params).await;
        assert_eq!(s, status, "{params:?}: {b}");
        assert_eq!(all(&b, "Code"), [code], "{params:?}: {b}");
        assert!(b.contains("<RequestID>"), "{b}");
        b
    }
}

/// Every text of `<tag>…</tag>` in document order.
pub(crate) fn all(xml: &str, tag: &str) -> Vec<String> {
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
        let key_file = c.controller.state.config.data_dir.join(kumo_api::sealing::KEY_FILE);
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
        assert_eq!(all(&b, "device"), ["/dev/sdf"], "the device asked for: {b}");
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
        // Still detaching: AWS's VolumeInUse, which Terraform's aws_ebs_volume delete retries on.
        ec2.err(&[("Action", "DeleteVolume"), ("VolumeId", &vol)], StatusCode::BAD_REQUEST, "VolumeInUse").await;
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
        // The ENI and private IP of the association, as DescribeInstances shows them (Terraform's
        // aws_eip reads network_interface and private_ip), and the filters on them.
        let d = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", &inst)]).await;
        let (eni, ip) = (all(&d, "networkInterfaceId")[0].clone(), all(&d, "privateIpAddress")[0].clone());
        assert_eq!((all(&b, "networkInterfaceId"), all(&b, "privateIpAddress")), (vec![eni.clone()], vec![ip.clone()]));
        assert_eq!(all(&b, "networkInterfaceOwnerId"), all(&d, "ownerId")[..1].to_vec(), "{b}");
        for (name, value) in [("network-interface-id", &eni), ("private-ip-address", &ip)] {
            let f =
                ec2.ok(&[("Action", "DescribeAddresses"), ("Filter.1.Name", name), ("Filter.1.Value.1", value)]).await;
            assert_eq!(all(&f, "allocationId"), vec![alloc.clone()], "{name}");
            let f =
                ec2.ok(&[("Action", "DescribeAddresses"), ("Filter.1.Name", name), ("Filter.1.Value.1", "x")]).await;
            assert!(all(&f, "allocationId").is_empty(), "{name}");
        }
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

// ------------------------------------------------------------- issue 13

/// The inner texts of `<tag>` elements at the top level of `xml` for that tag
/// (an `<item>` inside an `<item>` stays inside its parent).
pub(crate) fn elements(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let (mut depth, mut at) = (1usize, 0usize);
        loop {
            let next_open = body[at..].find(&open).map(|p| p + at);
            let next_close = body[at..].find(&close).map(|p| p + at).expect("balanced XML");
            match next_open {
                Some(o) if o < next_close => {
                    depth += 1;
                    at = o + open.len();
                }
                _ => {
                    depth -= 1;
                    at = next_close + close.len();
                    if depth == 0 {
                        out.push(body[..next_close].to_owned());
                        rest = &body[at..];
                        break;
                    }
                }
            }
        }
    }
    out
}

/// The first `<tag>` text in `xml`, if any.
pub(crate) fn first(xml: &str, tag: &str) -> Option<String> {
    all(xml, tag).into_iter().next()
}

/// The `item`s of the first `<set>` in `xml`.
pub(crate) fn items(xml: &str, set: &str) -> Vec<String> {
    elements(xml, set).first().map(|s| elements(s, "item")).unwrap_or_default()
}

fn hex_of(id: &str) -> &str {
    id.split_once('-').unwrap().1
}

/// Checks, field by field, that EC2's DescribeInstances and the native
/// `GET /v1/instances/{id}` (and `GET /v1/volumes`) tell the same story.
async fn assert_views_agree(c: &Cloud, t: &str, ec2: &Ec2<'_>, id: &str) {
    let (_, native) = c.get(&format!("/v1/instances/{id}"), t).await;
    let b = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", id)]).await;
    let inst = &items(&items(&b, "reservationSet")[0], "instancesSet")[0];
    let ctx = format!("native {native:#}\nEC2 {inst}");
    assert_eq!(first(inst, "instanceId").as_deref(), native["id"].as_str(), "{ctx}");
    assert_eq!(first(inst, "imageId").as_deref(), native["image_id"].as_str(), "{ctx}");
    assert_eq!(first(inst, "instanceType").as_deref(), native["flavor"].as_str(), "{ctx}");
    assert_eq!(first(inst, "keyName").as_deref(), native["key_pair"].as_str(), "{ctx}");
    let state = first(&elements(inst, "instanceState")[0], "name").unwrap();
    let expected = match native["state"].as_str().unwrap() {
        "pending" | "building" => "pending",
        "running" | "rebooting" | "unknown" => "running",
        "stopping" => "stopping",
        "stopped" | "error" => "stopped",
        "deleting" => "shutting-down",
        "deleted" => "terminated",
        other => panic!("state {other}"),
    };
    assert_eq!(state, expected, "{ctx}");
    let addrs = native["addresses"].as_array().unwrap();
    match addrs.first() {
        Some(a) => {
            let ip = a["ip"].as_str().unwrap();
            assert_eq!(first(inst, "privateIpAddress").as_deref(), Some(ip), "{ctx}");
            let net = hex_of(a["network_id"].as_str().unwrap());
            assert_eq!(first(inst, "subnetId"), Some(format!("subnet-{net}")), "{ctx}");
            assert_eq!(first(inst, "vpcId"), Some(format!("vpc-{net}")), "{ctx}");
            let dns = format!("ip-{}.kumo-1.compute.internal", ip.replace('.', "-"));
            assert_eq!(first(inst, "privateDnsName"), Some(dns), "{ctx}");
            assert_eq!(first(inst, "ipAddress").as_deref(), a["floating_ip"].as_str(), "{ctx}");
        }
        None => {
            for tag in ["privateIpAddress", "subnetId", "vpcId", "ipAddress"] {
                assert_eq!(first(inst, tag), None, "{tag}: {ctx}");
            }
        }
    }
    let nics = items(inst, "networkInterfaceSet");
    assert_eq!(nics.len(), addrs.len(), "{ctx}");
    for (n, (nic, a)) in nics.iter().zip(addrs).enumerate() {
        assert_eq!(first(nic, "networkInterfaceId").as_deref(), a["port_id"].as_str(), "{ctx}");
        assert_eq!(first(nic, "macAddress").as_deref(), a["mac"].as_str(), "{ctx}");
        assert_eq!(first(nic, "privateIpAddress").as_deref(), a["ip"].as_str(), "{ctx}");
        assert_eq!(first(nic, "deviceIndex"), Some(n.to_string()), "{ctx}");
        assert_eq!(first(nic, "subnetId"), Some(format!("subnet-{}", hex_of(a["network_id"].as_str().unwrap()))));
        let public = elements(nic, "association").first().and_then(|x| first(x, "publicIp"));
        assert_eq!(public.as_deref(), a["floating_ip"].as_str(), "{ctx}");
        let names: Vec<String> = items(nic, "groupSet").iter().filter_map(|g| first(g, "groupName")).collect();
        let native_names: Vec<String> =
            a["security_groups"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_owned()).collect();
        assert_eq!(names, native_names, "{ctx}");
    }
    let mut names: Vec<String> = items(inst, "groupSet").iter().filter_map(|g| first(g, "groupName")).collect();
    names.sort();
    let mut native_names: Vec<String> =
        native["security_groups"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_owned()).collect();
    native_names.sort();
    assert_eq!(names, native_names, "{ctx}");
    let (_, vols) = c.get("/v1/volumes", t).await;
    let mut attached: Vec<String> = vols["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["attached_to"].as_str() == Some(id))
        .filter(|v| !matches!(v["state"].as_str(), Some("creating" | "deleting" | "deleted")))
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    attached.sort();
    let mut mapped: Vec<String> =
        items(inst, "blockDeviceMapping").iter().filter_map(|m| first(m, "volumeId")).collect();
    mapped.sort();
    assert_eq!(mapped, attached, "{ctx}");
}

/// One random instance set-up of the property test.
#[derive(Debug, Clone)]
struct Shape {
    second_network: bool,
    groups: (bool, bool),
    floating: bool,
    volume: Option<usize>,
    key: bool,
    stop: bool,
}

fn shapes(n: usize) -> Vec<Shape> {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let strategy = (
        proptest::bool::ANY,
        (proptest::bool::ANY, proptest::bool::ANY),
        proptest::bool::ANY,
        proptest::option::of(0usize..3),
        proptest::bool::ANY,
        proptest::bool::ANY,
    )
        .prop_map(|(second_network, groups, floating, volume, key, stop)| Shape {
            second_network,
            groups,
            floating,
            volume,
            key,
            stop,
        });
    let mut runner = TestRunner::default();
    (0..n).map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect()
}

#[tokio::test]
async fn the_ec2_instance_view_agrees_with_the_native_view_field_by_field() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let image = c.kernel_image("tiny").await;
        let agent = FakeAgent::register(
            &c,
            "host-a",
            kumo_wire::agent::HostCapacity { vcpus: 64, memory_mib: 65536, disk_gib: 1000 },
        )
        .await;
        let ec2 = Ec2::new(&c, &t).await;
        let (s, net) = c.post("/v1/networks", &t, serde_json::json!({"name": "back", "cidr": "10.20.0.0/24"})).await;
        assert_eq!(s, StatusCode::CREATED, "{net}");
        let subnet = format!("subnet-{}", hex_of(net["id"].as_str().unwrap()));
        let (s, b) = c
            .post(
                "/v1/networks",
                &c.admin,
                serde_json::json!({"name": "public", "cidr": "203.0.113.0/28", "external": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let mut groups = Vec::new();
        for name in ["Web Servers", "db:5432/(primary)"] {
            let b = ec2.ok(&[("Action", "CreateSecurityGroup"), ("GroupName", name), ("GroupDescription", "g")]).await;
            groups.push(first(&b, "groupId").unwrap());
        }
        ec2.ok(&[("Action", "CreateKeyPair"), ("KeyName", "MyKey_2024")]).await;
        let devices = ["/dev/sdf", "/dev/xvdg", "/dev/sdh"];
        let mut ids = Vec::new();
        for shape in shapes(6) {
            let mut p = vec![
                ("Action".to_owned(), "RunInstances".to_owned()),
                ("ImageId".into(), image.clone()),
                ("InstanceType".into(), "mini".into()),
                ("MinCount".into(), "1".into()),
                ("MaxCount".into(), "1".into()),
            ];
            if shape.second_network {
                p.push(("SubnetId".into(), subnet.clone()));
            }
            if shape.key {
                p.push(("KeyName".into(), "MyKey_2024".into()));
            }
            let chosen: Vec<&String> = [(shape.groups.0, &groups[0]), (shape.groups.1, &groups[1])]
                .into_iter()
                .filter_map(|(on, g)| on.then_some(g))
                .collect();
            for (n, g) in chosen.iter().enumerate() {
                p.push((format!("SecurityGroupId.{}", n + 1), (*g).clone()));
            }
            let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = ec2.ok(&refs).await;
            let id = first(&out, "instanceId").unwrap();
            // The RunInstances answer already shows the groups asked for.
            let shown = items(&items(&out, "instancesSet")[0], "groupSet").len();
            assert_eq!(shown, chosen.len().max(usize::from(chosen.is_empty())), "{shape:?}: {out}");
            c.wait_state(&t, &id, "building").await;
            agent.converge(&c).await;
            c.wait_state(&t, &id, "running").await;
            if shape.floating {
                let b = ec2.ok(&[("Action", "AllocateAddress"), ("Domain", "vpc")]).await;
                let alloc = first(&b, "allocationId").unwrap();
                ec2.ok(&[("Action", "AssociateAddress"), ("AllocationId", &alloc), ("InstanceId", &id)]).await;
            }
            if let Some(d) = shape.volume {
                let b = ec2.ok(&[("Action", "CreateVolume"), ("AvailabilityZone", "zone-1"), ("Size", "1")]).await;
                let vol = first(&b, "volumeId").unwrap();
                agent.converge_storage(&c, None).await;
                let b = ec2
                    .ok(&[("Action", "AttachVolume"), ("VolumeId", &vol), ("InstanceId", &id), ("Device", devices[d])])
                    .await;
                assert_eq!(first(&b, "device").as_deref(), Some(devices[d]), "{b}");
                agent.converge_storage(&c, None).await;
                let b = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", &id)]).await;
                let mapping = items(&b, "blockDeviceMapping");
                assert_eq!(first(&mapping[0], "deviceName").as_deref(), Some(devices[d]), "{b}");
            }
            if shape.stop {
                ec2.ok(&[("Action", "StopInstances"), ("InstanceId.1", &id)]).await;
                agent.converge(&c).await;
                c.wait_state(&t, &id, "stopped").await;
                let b = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", &id)]).await;
                assert!(first(&b, "reason").unwrap().starts_with("User initiated ("), "{b}");
                assert_eq!(
                    first(&elements(&b, "stateReason")[0], "code").as_deref(),
                    Some("Client.UserInitiatedShutdown"),
                    "{b}"
                );
            }
            assert_views_agree(&c, &t, &ec2, &id).await;
            ids.push((id, shape));
        }
        // Filters over the related data agree with the view.
        for (id, shape) in &ids {
            let (_, native) = c.get(&format!("/v1/instances/{id}"), &t).await;
            let ip = native["addresses"][0]["ip"].as_str().unwrap();
            for (name, value) in [
                ("private-ip-address", ip.to_owned()),
                ("network-interface.network-interface-id", native["addresses"][0]["port_id"].as_str().unwrap().into()),
                ("network-interface.mac-address", native["addresses"][0]["mac"].as_str().unwrap().into()),
            ] {
                let b = ec2
                    .ok(&[("Action", "DescribeInstances"), ("Filter.1.Name", name), ("Filter.1.Value.1", &value)])
                    .await;
                assert_eq!(all(&b, "instanceId").iter().filter(|i| *i == id).count(), 1, "{name}={value}: {b}");
                assert_eq!(items(&b, "reservationSet").len(), 1, "{name}={value}: {b}");
            }
            let b = ec2
                .ok(&[("Action", "DescribeInstances"), ("Filter.1.Name", "subnet-id"), ("Filter.1.Value.1", &subnet)])
                .await;
            assert_eq!(b.contains(&format!("<instanceId>{id}</instanceId>")), shape.second_network, "{b}");
            let b = ec2
                .ok(&[
                    ("Action", "DescribeInstances"),
                    ("Filter.1.Name", "instance.group-id"),
                    ("Filter.1.Value.1", &groups[0]),
                ])
                .await;
            assert_eq!(b.contains(&format!("<instanceId>{id}</instanceId>")), shape.groups.0, "{b}");
        }
        let b = ec2
            .ok(&[
                ("Action", "DescribeInstances"),
                ("Filter.1.Name", "ip-address"),
                ("Filter.1.Value.1", "203.0.113.*"),
            ])
            .await;
        assert_eq!(items(&b, "reservationSet").len(), ids.iter().filter(|(_, s)| s.floating).count(), "{b}");
        ec2.err(
            &[("Action", "DescribeInstances"), ("Filter.1.Name", "no-such-filter"), ("Filter.1.Value.1", "x")],
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        )
        .await;
        // Terminated instances: no interfaces left, as on AWS.
        let (id, _) = &ids[0];
        ec2.ok(&[("Action", "TerminateInstances"), ("InstanceId.1", id)]).await;
        agent.converge(&c).await;
        c.wait_state(&t, id, "deleted").await;
        assert_views_agree(&c, &t, &ec2, id).await;
    }
}

#[tokio::test]
async fn attach_volume_keeps_the_device_the_caller_asked_for_and_max_results_too_large_is_capped() {
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
        let inst = first(&out, "instanceId").unwrap();
        c.wait_state(&t, &inst, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &inst, "running").await;
        let mut vols = Vec::new();
        for _ in 0..2 {
            let b = ec2.ok(&[("Action", "CreateVolume"), ("AvailabilityZone", "zone-1"), ("Size", "1")]).await;
            vols.push(first(&b, "volumeId").unwrap());
        }
        agent.converge_storage(&c, None).await;
        for bad in ["sdf!", "/dev/", "/dev/SDF", "/dev/vda"] {
            ec2.err(
                &[("Action", "AttachVolume"), ("VolumeId", &vols[0]), ("InstanceId", &inst), ("Device", bad)],
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
            )
            .await;
        }
        let b = ec2
            .ok(&[("Action", "AttachVolume"), ("VolumeId", &vols[0]), ("InstanceId", &inst), ("Device", "/dev/sdf")])
            .await;
        assert_eq!(first(&b, "device").as_deref(), Some("/dev/sdf"), "{b}");
        ec2.err(
            &[("Action", "AttachVolume"), ("VolumeId", &vols[1]), ("InstanceId", &inst), ("Device", "/dev/sdf")],
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        )
        .await;
        agent.converge_storage(&c, None).await;
        let b = ec2.ok(&[("Action", "DescribeVolumes"), ("VolumeId.1", &vols[0])]).await;
        assert_eq!(first(&b, "device").as_deref(), Some("/dev/sdf"), "{b}");
        let b = ec2
            .ok(&[
                ("Action", "DescribeVolumes"),
                ("Filter.1.Name", "attachment.device"),
                ("Filter.1.Value.1", "/dev/sdf"),
            ])
            .await;
        assert_eq!(all(&b, "volumeId").len(), 2, "the volume and its attachment: {b}");
        // The guest's own name is unchanged (the native view).
        let (_, v) = c.get(&format!("/v1/volumes/{}", vols[0]), &t).await;
        assert_eq!(v["device"], "vdb", "{v}");
        let b = ec2.ok(&[("Action", "DetachVolume"), ("VolumeId", &vols[0])]).await;
        assert_eq!(first(&b, "device").as_deref(), Some("/dev/sdf"), "{b}");
        agent.converge_storage(&c, None).await;
        // Re-attached elsewhere without asking the same name: the old one is not shown.
        let b = ec2
            .ok(&[("Action", "AttachVolume"), ("VolumeId", &vols[0]), ("InstanceId", &inst), ("Device", "/dev/sdg")])
            .await;
        assert_eq!(first(&b, "device").as_deref(), Some("/dev/sdg"), "{b}");

        // The stock `aws ec2 describe-volumes` sends MaxResults=1000: capped, not refused.
        let b = ec2.ok(&[("Action", "DescribeVolumes"), ("MaxResults", "1000")]).await;
        assert_eq!(all(&b, "volumeId").len(), 3, "{b}");
        let b = ec2.ok(&[("Action", "DescribeInstances"), ("MaxResults", "100000")]).await;
        assert_eq!(all(&b, "reservationId").len(), 1, "{b}");
        ec2.err(
            &[("Action", "DescribeVolumes"), ("MaxResults", "4")],
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        )
        .await;
    }
}

#[tokio::test]
async fn key_pair_and_security_group_names_as_aws_allows_in_both_apis() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let ec2 = Ec2::new(&c, &t).await;
        let long = "K".repeat(255);
        for name in ["MyKey_2024", "0b7e5c2a-7f0e-4c55-9f0e-2d3c4b5a6978", long.as_str()] {
            let b = ec2.ok(&[("Action", "CreateKeyPair"), ("KeyName", name)]).await;
            assert_eq!(first(&b, "keyName").as_deref(), Some(name));
            let b = ec2.ok(&[("Action", "DescribeKeyPairs"), ("KeyName.1", name)]).await;
            assert_eq!(first(&b, "keyName").as_deref(), Some(name), "{b}");
        }
        let (s, b) = c.post("/v1/keypairs", &t, serde_json::json!({"name": "Native_Key 1"})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        for bad in ["", " lead", &"k".repeat(256)] {
            ec2.err(
                &[("Action", "CreateKeyPair"), ("KeyName", bad)],
                StatusCode::BAD_REQUEST,
                if bad.is_empty() { "MissingParameter" } else { "InvalidParameterValue" },
            )
            .await;
            let (s, b) = c.post("/v1/keypairs", &t, serde_json::json!({"name": bad})).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
        }
        for name in ["Web Servers", "1st._-:/()#,@[]+=&;{}!$*"] {
            let b = ec2.ok(&[("Action", "CreateSecurityGroup"), ("GroupName", name), ("GroupDescription", "d")]).await;
            let id = first(&b, "groupId").unwrap();
            let b = ec2.ok(&[("Action", "DescribeSecurityGroups"), ("GroupName.1", name)]).await;
            assert_eq!(first(&b, "groupId"), Some(id), "{b}");
        }
        let (s, b) =
            c.post("/v1/security-groups", &t, serde_json::json!({"name": "Native Group", "description": ""})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        for bad in ["sg-123", "no%percent", "naïve"] {
            ec2.err(
                &[("Action", "CreateSecurityGroup"), ("GroupName", bad), ("GroupDescription", "d")],
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
            )
            .await;
            let (s, b) = c.post("/v1/security-groups", &t, serde_json::json!({"name": bad, "description": ""})).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
        }
        // Other resources keep Kumo's rules.
        let (s, b) = c.post("/v1/networks", &t, serde_json::json!({"name": "Bad_Name", "cidr": "10.9.0.0/24"})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        // Deleting a key pair that does not exist succeeds, as on AWS.
        ec2.ok(&[("Action", "DeleteKeyPair"), ("KeyName", "never-made")]).await;
    }
}

#[tokio::test]
async fn dry_run_answers_412_on_every_mutating_action_and_changes_nothing() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let image = c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (s, b) = c
            .post(
                "/v1/networks",
                &c.admin,
                serde_json::json!({"name": "public", "cidr": "203.0.113.0/29", "external": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
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
        let inst = first(&out, "instanceId").unwrap();
        c.wait_state(&t, &inst, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &inst, "running").await;
        let vol = first(
            &ec2.ok(&[("Action", "CreateVolume"), ("AvailabilityZone", "zone-1"), ("Size", "1")]).await,
            "volumeId",
        )
        .unwrap();
        agent.converge_storage(&c, None).await;
        let sg = first(
            &ec2.ok(&[("Action", "CreateSecurityGroup"), ("GroupName", "g"), ("GroupDescription", "d")]).await,
            "groupId",
        )
        .unwrap();
        let alloc = first(&ec2.ok(&[("Action", "AllocateAddress")]).await, "allocationId").unwrap();
        ec2.ok(&[("Action", "CreateKeyPair"), ("KeyName", "k")]).await;
        let snapshot_of = |body: String| body;
        let before = snapshot_of(
            ec2.ok(&[("Action", "DescribeInstances")]).await
                + &ec2.ok(&[("Action", "DescribeVolumes")]).await
                + &ec2.ok(&[("Action", "DescribeSecurityGroups")]).await
                + &ec2.ok(&[("Action", "DescribeAddresses")]).await
                + &ec2.ok(&[("Action", "DescribeKeyPairs")]).await
                + &ec2.ok(&[("Action", "DescribeTags")]).await
                + &ec2.ok(&[("Action", "DescribeSnapshots")]).await,
        );
        let perm = [
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "22"),
            ("IpPermissions.1.ToPort", "22"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
        ];
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![
                ("Action", "RunInstances"),
                ("ImageId", &image),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
            ],
            vec![("Action", "StopInstances"), ("InstanceId.1", &inst)],
            vec![("Action", "RebootInstances"), ("InstanceId.1", &inst)],
            vec![("Action", "TerminateInstances"), ("InstanceId.1", &inst)],
            vec![("Action", "CreateImage"), ("InstanceId", &inst), ("Name", "img")],
            vec![("Action", "CreateKeyPair"), ("KeyName", "k2")],
            vec![("Action", "DeleteKeyPair"), ("KeyName", "k")],
            vec![("Action", "CreateVolume"), ("AvailabilityZone", "zone-1"), ("Size", "1")],
            vec![("Action", "AttachVolume"), ("VolumeId", &vol), ("InstanceId", &inst), ("Device", "/dev/sdf")],
            vec![("Action", "CreateSnapshot"), ("VolumeId", &vol)],
            vec![("Action", "DeleteVolume"), ("VolumeId", &vol)],
            vec![("Action", "CreateTags"), ("ResourceId.1", &inst), ("Tag.1.Key", "a"), ("Tag.1.Value", "b")],
            vec![("Action", "CreateSecurityGroup"), ("GroupName", "g2"), ("GroupDescription", "d")],
            [vec![("Action", "AuthorizeSecurityGroupIngress"), ("GroupId", sg.as_str())], perm.to_vec()].concat(),
            vec![("Action", "DeleteSecurityGroup"), ("GroupId", &sg)],
            vec![("Action", "AllocateAddress")],
            vec![("Action", "AssociateAddress"), ("AllocationId", &alloc), ("InstanceId", &inst)],
            vec![("Action", "ReleaseAddress"), ("AllocationId", &alloc)],
            vec![("Action", "ModifyInstanceAttribute"), ("InstanceId", &inst), ("DisableApiTermination.Value", "true")],
        ];
        for case in &cases {
            let mut p = case.clone();
            p.push(("DryRun", "true"));
            ec2.err(&p, StatusCode::PRECONDITION_FAILED, "DryRunOperation").await;
        }
        // The real error when the call would fail.
        ec2.err(
            &[
                ("Action", "AttachVolume"),
                ("VolumeId", "vol-0123456789abcdef0"),
                ("InstanceId", &inst),
                ("Device", "/dev/sdf"),
                ("DryRun", "true"),
            ],
            StatusCode::BAD_REQUEST,
            "InvalidVolume.NotFound",
        )
        .await;
        ec2.err(
            &[("Action", "DeleteSecurityGroup"), ("GroupId", "sg-0123456789abcdef0"), ("DryRun", "true")],
            StatusCode::BAD_REQUEST,
            "InvalidGroup.NotFound",
        )
        .await;
        let after = ec2.ok(&[("Action", "DescribeInstances")]).await
            + &ec2.ok(&[("Action", "DescribeVolumes")]).await
            + &ec2.ok(&[("Action", "DescribeSecurityGroups")]).await
            + &ec2.ok(&[("Action", "DescribeAddresses")]).await
            + &ec2.ok(&[("Action", "DescribeKeyPairs")]).await
            + &ec2.ok(&[("Action", "DescribeTags")]).await
            + &ec2.ok(&[("Action", "DescribeSnapshots")]).await;
        let strip = |s: &str| {
            s.split("<requestId>").map(|p| p.split_once("</requestId>").map_or(p, |(_, r)| r)).collect::<String>()
        };
        assert_eq!(strip(&after), strip(&before), "a dry run changed something");
    }
}

#[tokio::test]
async fn owner_id_is_a_12_digit_account_id_per_project_and_sts_names_the_caller() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t1 = c.tenant("acme").await;
        let t2 = c.tenant("rival").await;
        let a = Ec2::new(&c, &t1).await;
        let b = Ec2::new(&c, &t2).await;
        let owner = |x: &str| first(x, "ownerId").unwrap();
        let oa = owner(&a.ok(&[("Action", "DescribeVpcs")]).await);
        let ob = owner(&b.ok(&[("Action", "DescribeVpcs")]).await);
        for o in [&oa, &ob] {
            assert_eq!(o.len(), 12, "{o}");
            assert!(o.chars().all(|c| c.is_ascii_digit()), "{o}");
        }
        assert_ne!(oa, ob);
        assert_eq!(owner(&a.ok(&[("Action", "DescribeSubnets")]).await), oa, "stable across calls");

        // STS GetCallerIdentity on the same endpoint, SigV4 scope `sts`.
        let mut sts = Ec2::new(&c, &t1).await;
        sts.service = "sts".into();
        let body = sts.ok(&[("Action", "GetCallerIdentity")]).await;
        assert!(
            body.starts_with("<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"),
            "{body}"
        );
        assert_eq!(first(&body, "Account"), Some(oa.clone()), "{body}");
        assert!(first(&body, "Arn").unwrap().starts_with(&format!("arn:aws:iam::{oa}:user/")), "{body}");
        assert!(first(&body, "RequestId").is_some(), "{body}");
        // An `ec2` scope for STS, or an `sts` scope for EC2, is refused.
        let (s, body) = a.call(&[("Action", "GetCallerIdentity")]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("<ErrorResponse"), "STS errors have STS's shape: {body}");
        let (s, _) = sts.call(&[("Action", "DescribeVpcs")]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
}

/// Sends the same call `n` times at once; every answer must be 200.
async fn at_once(ec2: &Ec2<'_>, params: &[(&str, &str)], n: usize) -> Vec<String> {
    futures::future::join_all((0..n).map(|_| ec2.ok(params))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_client_token_retries_create_one_resource_and_answer_the_same() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let image = c.kernel_image("tiny").await;
        let agent = FakeAgent::register(
            &c,
            "host-a",
            kumo_wire::agent::HostCapacity { vcpus: 64, memory_mib: 65536, disk_gib: 1000 },
        )
        .await;
        let (s, b) = c
            .post(
                "/v1/networks",
                &c.admin,
                serde_json::json!({"name": "public", "cidr": "203.0.113.0/28", "external": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let ec2 = Ec2::new(&c, &t).await;

        let run = [
            ("Action", "RunInstances"),
            ("ImageId", image.as_str()),
            ("InstanceType", "mini"),
            ("MinCount", "2"),
            ("MaxCount", "2"),
            ("ClientToken", "run-1"),
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.1.Tag.1.Key", "Name"),
            ("TagSpecification.1.Tag.1.Value", "web"),
        ];
        let answers = at_once(&ec2, &run, 8).await;
        let ids = all(&answers[0], "instanceId");
        assert_eq!(ids.len(), 2, "{}", answers[0]);
        for a in &answers {
            assert_eq!(all(a, "instanceId"), ids, "never an empty or a second reservation: {a}");
            assert_eq!(all(a, "reservationId"), all(&answers[0], "reservationId"));
            assert!(a.contains("<key>Name</key><value>web</value>"), "tags recorded with the launch: {a}");
        }
        let (_, list) = c.get("/v1/instances", &t).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 2, "launched once: {list}");
        let mut other = run.to_vec();
        other[2].1 = "small";
        ec2.err(&other, StatusCode::BAD_REQUEST, "IdempotentParameterMismatch").await;

        let vol = [("Action", "CreateVolume"), ("AvailabilityZone", "zone-1"), ("Size", "1"), ("ClientToken", "vol-1")];
        let answers = at_once(&ec2, &vol, 8).await;
        let v = all(&answers[0], "volumeId");
        assert!(answers.iter().all(|a| all(a, "volumeId") == v), "{answers:?}");
        let (_, vols) = c.get("/v1/volumes", &t).await;
        assert_eq!(vols["items"].as_array().unwrap().len(), 1, "{vols}");
        ec2.err(
            &[("Action", "CreateVolume"), ("AvailabilityZone", "zone-1"), ("Size", "2"), ("ClientToken", "vol-1")],
            StatusCode::BAD_REQUEST,
            "IdempotentParameterMismatch",
        )
        .await;
        agent.converge_storage(&c, None).await;

        let snap = [("Action", "CreateSnapshot"), ("VolumeId", v[0].as_str()), ("ClientToken", "snap-1")];
        let answers = at_once(&ec2, &snap, 6).await;
        let s1 = all(&answers[0], "snapshotId");
        assert!(answers.iter().all(|a| all(a, "snapshotId") == s1), "{answers:?}");
        assert_eq!(all(&ec2.ok(&[("Action", "DescribeSnapshots")]).await, "snapshotId"), s1);

        let alloc = [("Action", "AllocateAddress"), ("Domain", "vpc"), ("ClientToken", "eip-1")];
        let answers = at_once(&ec2, &alloc, 6).await;
        let a1 = all(&answers[0], "allocationId");
        assert!(answers.iter().all(|a| all(a, "allocationId") == a1), "{answers:?}");
        assert_eq!(all(&ec2.ok(&[("Action", "DescribeAddresses")]).await, "allocationId"), a1);

        // A call that fails records nothing: the token stays free.
        let big = [
            ("Action", "RunInstances"),
            ("ImageId", image.as_str()),
            ("InstanceType", "large"),
            ("MinCount", "6"),
            ("MaxCount", "6"),
            ("ClientToken", "run-2"),
        ];
        ec2.err(&big, StatusCode::BAD_REQUEST, "InstanceLimitExceeded").await;
        let small = [
            ("Action", "RunInstances"),
            ("ImageId", image.as_str()),
            ("InstanceType", "mini"),
            ("MinCount", "1"),
            ("MaxCount", "1"),
            ("ClientToken", "run-2"),
        ];
        let b = ec2.ok(&small).await;
        assert_eq!(all(&b, "instanceId").len(), 1, "{b}");

        // A later retry still gets the same answer.
        let again = ec2.ok(&run).await;
        assert_eq!(all(&again, "instanceId"), ids);
    }
}

#[tokio::test]
async fn a_client_token_claimed_by_a_caller_that_dies_before_committing_is_free_again() {
    // PostgreSQL only: hold the token row in an open transaction, as a
    // controller that crashed mid-launch would, then let that transaction die.
    if std::env::var("KUMO_TEST_POSTGRES_URL").is_err() {
        return;
    }
    use sqlx::Connection;
    let c = cloud("postgres", |_| {}).await;
    let t = c.tenant("acme").await;
    let image = c.kernel_image("tiny").await;
    FakeAgent::register(&c, "host-a", CAPACITY).await;
    let ec2 = Ec2::new(&c, &t).await;
    let probe = ec2
        .ok(&[
            ("Action", "RunInstances"),
            ("ImageId", &image),
            ("InstanceType", "mini"),
            ("MinCount", "1"),
            ("MaxCount", "1"),
        ])
        .await;
    let (_, probe) = c.get(&format!("/v1/instances/{}", first(&probe, "instanceId").unwrap()), &t).await;
    let project = probe["project_id"].as_str().unwrap().to_owned();
    let mut conn = sqlx::AnyConnection::connect(&c.db_url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO ec2_client_tokens (project_id, client_token, action, reservation_id, resource_ids, created_at) \
         VALUES ($1, 'crash-1', 'RunInstances', '', '{\"fingerprint\":\"x\",\"ids\":[\"i-00000000000000000\"]}', 0)",
    )
    .bind(&project)
    .execute(&mut *tx)
    .await
    .unwrap();
    let run = [
        ("Action", "RunInstances"),
        ("ImageId", image.as_str()),
        ("InstanceType", "mini"),
        ("MinCount", "1"),
        ("MaxCount", "1"),
        ("ClientToken", "crash-1"),
    ];
    let call = ec2.call(&run);
    let die = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        tx.rollback().await.unwrap();
    };
    let ((s, b), ()) = tokio::join!(call, die);
    assert_eq!(s, StatusCode::OK, "{b}");
    let ids = all(&b, "instanceId");
    assert_eq!(ids.len(), 1, "{b}");
    assert_eq!(all(&ec2.ok(&run).await, "instanceId"), ids);
}

#[tokio::test]
async fn instance_attributes_network_interfaces_rules_and_account_attributes() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let image = c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let ec2 = Ec2::new(&c, &t).await;
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let out = ec2
            .ok(&[
                ("Action", "RunInstances"),
                ("ImageId", &image),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("UserData", &b64("#!/bin/sh\necho one\n")),
                ("DisableApiTermination", "true"),
            ])
            .await;
        let id = first(&out, "instanceId").unwrap();
        c.wait_state(&t, &id, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;
        let attr = |name: &'static str| {
            let ec2 = &ec2;
            let id = id.clone();
            async move {
                let b =
                    ec2.ok(&[("Action", "DescribeInstanceAttribute"), ("InstanceId", &id), ("Attribute", name)]).await;
                first(&elements(&b, name)[0], "value")
            }
        };
        assert_eq!(attr("instanceType").await.as_deref(), Some("mini"));
        assert_eq!(attr("userData").await, Some(b64("#!/bin/sh\necho one\n")));
        assert_eq!(attr("disableApiTermination").await.as_deref(), Some("true"));
        assert_eq!(attr("disableApiStop").await.as_deref(), Some("false"));
        assert_eq!(attr("instanceInitiatedShutdownBehavior").await.as_deref(), Some("stop"));
        assert_eq!(attr("sourceDestCheck").await.as_deref(), Some("true"));
        ec2.err(
            &[("Action", "DescribeInstanceAttribute"), ("InstanceId", &id), ("Attribute", "nonsense")],
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        )
        .await;
        // disableApiTermination is honoured, then lifted.
        ec2.err(
            &[("Action", "TerminateInstances"), ("InstanceId.1", &id)],
            StatusCode::BAD_REQUEST,
            "OperationNotPermitted",
        )
        .await;
        ec2.ok(&[("Action", "ModifyInstanceAttribute"), ("InstanceId", &id), ("DisableApiStop.Value", "true")]).await;
        ec2.err(
            &[("Action", "StopInstances"), ("InstanceId.1", &id)],
            StatusCode::BAD_REQUEST,
            "OperationNotPermitted",
        )
        .await;
        ec2.ok(&[
            ("Action", "ModifyInstanceAttribute"),
            ("InstanceId", &id),
            ("Attribute", "disableApiStop"),
            ("Value", "false"),
        ])
        .await;
        ec2.ok(&[
            ("Action", "ModifyInstanceAttribute"),
            ("InstanceId", &id),
            ("InstanceInitiatedShutdownBehavior.Value", "terminate"),
        ])
        .await;
        assert_eq!(attr("instanceInitiatedShutdownBehavior").await.as_deref(), Some("terminate"));
        ec2.ok(&[("Action", "ModifyInstanceAttribute"), ("InstanceId", &id), ("SourceDestCheck.Value", "false")]).await;
        assert_eq!(attr("sourceDestCheck").await.as_deref(), Some("false"));
        ec2.err(
            &[
                ("Action", "ModifyInstanceAttribute"),
                ("InstanceId", &id),
                ("InstanceInitiatedShutdownBehavior.Value", "explode"),
            ],
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        )
        .await;
        // userData changes only while stopped, as on AWS.
        let new_data = b64("#!/bin/sh\necho two\n");
        ec2.err(
            &[("Action", "ModifyInstanceAttribute"), ("InstanceId", &id), ("UserData.Value", &new_data)],
            StatusCode::BAD_REQUEST,
            "IncorrectInstanceState",
        )
        .await;
        ec2.ok(&[("Action", "StopInstances"), ("InstanceId.1", &id)]).await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "stopped").await;
        ec2.ok(&[("Action", "ModifyInstanceAttribute"), ("InstanceId", &id), ("UserData.Value", &new_data)]).await;
        assert_eq!(attr("userData").await, Some(new_data));

        // DescribeNetworkInterfaces: one eni- per port, as the native view has them.
        let (_, native) = c.get(&format!("/v1/instances/{id}"), &t).await;
        let port = native["addresses"][0]["port_id"].as_str().unwrap();
        let b = ec2.ok(&[("Action", "DescribeNetworkInterfaces")]).await;
        let nics = items(&b, "networkInterfaceSet");
        assert_eq!(nics.len(), 1, "{b}");
        assert_eq!(first(&nics[0], "networkInterfaceId").as_deref(), Some(port));
        assert_eq!(first(&nics[0], "instanceId"), Some(id.clone()));
        assert_eq!(first(&nics[0], "macAddress").as_deref(), native["addresses"][0]["mac"].as_str());
        assert_eq!(first(&nics[0], "sourceDestCheck").as_deref(), Some("false"));
        let b = ec2
            .ok(&[
                ("Action", "DescribeNetworkInterfaces"),
                ("Filter.1.Name", "attachment.instance-id"),
                ("Filter.1.Value.1", &id),
            ])
            .await;
        assert_eq!(items(&b, "networkInterfaceSet").len(), 1, "{b}");
        ec2.err(
            &[("Action", "DescribeNetworkInterfaces"), ("NetworkInterfaceId.1", "eni-0123456789abcdef0")],
            StatusCode::BAD_REQUEST,
            "InvalidNetworkInterfaceID.NotFound",
        )
        .await;

        // DescribeSecurityGroupRules: ingress rules and the allow-all egress rule.
        let sg = first(
            &ec2.ok(&[("Action", "CreateSecurityGroup"), ("GroupName", "web"), ("GroupDescription", "d")]).await,
            "groupId",
        )
        .unwrap();
        ec2.ok(&[
            ("Action", "AuthorizeSecurityGroupIngress"),
            ("GroupId", &sg),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "443"),
            ("IpPermissions.1.ToPort", "443"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ])
        .await;
        let b = ec2
            .ok(&[("Action", "DescribeSecurityGroupRules"), ("Filter.1.Name", "group-id"), ("Filter.1.Value.1", &sg)])
            .await;
        let rules = items(&b, "securityGroupRuleSet");
        assert_eq!(rules.len(), 2, "{b}");
        assert_eq!(all(&b, "isEgress"), ["false", "true"], "{b}");
        assert_eq!(all(&b, "fromPort"), ["443", "-1"], "{b}");
        let b = ec2.ok(&[("Action", "DescribeSecurityGroups"), ("GroupId.1", &sg)]).await;
        assert!(first(&b, "vpcId").unwrap().starts_with("vpc-"), "{b}");

        // DescribeAccountAttributes: the default VPC and the quotas.
        let b = ec2.ok(&[("Action", "DescribeAccountAttributes")]).await;
        let names = all(&b, "attributeName");
        assert!(names.contains(&"default-vpc".to_owned()) && names.contains(&"max-instances".to_owned()), "{b}");
        let b = ec2.ok(&[("Action", "DescribeAccountAttributes"), ("AttributeName.1", "default-vpc")]).await;
        let vpc = first(&b, "attributeValue").unwrap();
        let vpcs =
            ec2.ok(&[("Action", "DescribeVpcs"), ("Filter.1.Name", "is-default"), ("Filter.1.Value.1", "true")]).await;
        assert_eq!(all(&vpcs, "vpcId"), [vpc], "{vpcs}");
        let b = ec2.ok(&[("Action", "DescribeAccountAttributes"), ("AttributeName.1", "max-instances")]).await;
        assert_eq!(first(&b, "attributeValue").as_deref(), Some("10"), "{b}");
    }
}

/// `ModifyInstanceAttribute` of `InstanceType`.
fn resize<'a>(id: &'a str, to: &'a str) -> [(&'a str, &'a str); 3] {
    [("Action", "ModifyInstanceAttribute"), ("InstanceId", id), ("InstanceType.Value", to)]
}

/// The host's claimed vCPUs and MiB, as the admin's host list shows them.
async fn host_use(c: &Cloud) -> (u64, u64) {
    let (_, hosts) = c.get("/v1/hosts", &c.admin).await;
    let h = &hosts["items"][0];
    (h["used_vcpus"].as_u64().unwrap(), h["used_memory_mib"].as_u64().unwrap())
}

#[tokio::test]
async fn modify_instance_type_while_stopped_resizes_the_next_start_and_refuses_otherwise() {
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
        let id = first(&out, "instanceId").unwrap();
        c.wait_state(&t, &id, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;
        let attr = || {
            let (ec2, id) = (&ec2, &id);
            async move {
                let b = ec2
                    .ok(&[("Action", "DescribeInstanceAttribute"), ("InstanceId", id), ("Attribute", "instanceType")])
                    .await;
                first(&elements(&b, "instanceType")[0], "value").unwrap()
            }
        };
        assert_eq!(host_use(&c).await, (1, 512));

        // Running: refused as on AWS, nothing changes.
        let m = resize(&id, "small");
        ec2.err(&m, StatusCode::BAD_REQUEST, "IncorrectInstanceState").await;
        assert_eq!(attr().await, "mini");
        let flavor_path = format!("/v1/instances/{id}/flavor");
        let (s, b) = c.call(Method::PUT, &flavor_path, Some(&t), Some(serde_json::json!({"flavor": "small"}))).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");

        ec2.ok(&[("Action", "StopInstances"), ("InstanceId.1", &id)]).await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "stopped").await;

        // An unknown type: InvalidInstanceAttributeValue, nothing changes.
        let m = resize(&id, "gigantic");
        ec2.err(&m, StatusCode::BAD_REQUEST, "InvalidInstanceAttributeValue").await;
        let (s, b) = c.call(Method::PUT, &flavor_path, Some(&t), Some(serde_json::json!({"flavor": "gigantic"}))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        // A type the host cannot hold (8 GiB on a 4 GiB host): InsufficientInstanceCapacity.
        let m = resize(&id, "large");
        ec2.err(&m, StatusCode::BAD_REQUEST, "InsufficientInstanceCapacity").await;
        // Over the project's vCPU quota: refused, nothing changes.
        let (s, b) = c
            .call(Method::PUT, "/v1/projects/acme/quotas", Some(&c.admin), Some(serde_json::json!({"vcpus": 1})))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let m = resize(&id, "medium");
        ec2.err(&m, StatusCode::BAD_REQUEST, "ResourceLimitExceeded").await;
        assert_eq!(attr().await, "mini");
        assert_eq!(host_use(&c).await, (1, 512));
        let (_, native) = c.get(&format!("/v1/instances/{id}"), &t).await;
        assert_eq!((native["flavor"].as_str(), native["vcpus"].as_u64()), (Some("mini"), Some(1)), "{native}");

        // DryRun: 412 and nothing changes.
        let mut m = resize(&id, "medium").to_vec();
        m.push(("DryRun", "true"));
        ec2.err(&m, StatusCode::PRECONDITION_FAILED, "DryRunOperation").await;
        assert_eq!(attr().await, "mini");

        // Within the quota: every view shows the new type, the host's claim follows it.
        let (s, b) = c
            .call(Method::PUT, "/v1/projects/acme/quotas", Some(&c.admin), Some(serde_json::json!({"vcpus": 4})))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let m = resize(&id, "medium");
        let b = ec2.ok(&m).await;
        assert_eq!(first(&b, "return").as_deref(), Some("true"), "{b}");
        assert_eq!(attr().await, "medium");
        let b = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", &id)]).await;
        assert_eq!(all(&b, "instanceType"), ["medium"], "{b}");
        let (_, native) = c.get(&format!("/v1/instances/{id}"), &t).await;
        assert_eq!(native["flavor"].as_str(), Some("medium"), "{native}");
        assert_eq!((native["vcpus"].as_u64(), native["memory_mib"].as_u64()), (Some(2), Some(4096)), "{native}");
        assert_eq!(native["disk_gib"].as_u64(), Some(1), "the root disk keeps its size: {native}");
        assert_eq!(host_use(&c).await, (2, 4096));
        let (_, events) = c.get(&format!("/v1/instances/{id}/events"), &t).await;
        assert!(events.to_string().contains("flavor_changed"), "{events}");

        // The next start hands the agent the new sizes.
        ec2.ok(&[("Action", "StartInstances"), ("InstanceId.1", &id)]).await;
        let desired = agent.converge(&c).await;
        let d = desired.instances.iter().find(|d| d.id.as_str() == id).unwrap();
        assert_eq!((d.spec.vcpus, d.spec.memory_mib), (2, 4096));
        c.wait_state(&t, &id, "running").await;

        // Down again to a smaller type gives the difference back to the host.
        ec2.ok(&[("Action", "StopInstances"), ("InstanceId.1", &id)]).await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "stopped").await;
        // (through the native API this time)
        let (s, b) = c.call(Method::PUT, &flavor_path, Some(&t), Some(serde_json::json!({"flavor": "small"}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!((b["flavor"].as_str(), b["memory_mib"].as_u64()), (Some("small"), Some(1024)), "{b}");
        assert_eq!(host_use(&c).await, (1, 1024));
        // Deleting it releases exactly what it holds now.
        ec2.ok(&[("Action", "TerminateInstances"), ("InstanceId.1", &id)]).await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "deleted").await;
        assert_eq!(host_use(&c).await, (0, 0));
    }
}

#[tokio::test]
async fn deregister_image_while_instances_use_it_succeeds_and_they_keep_running() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        // A private image of the tenant's own.
        let (s, img) = c.post("/v1/images", &t, serde_json::json!({"name": "mine", "kind": "kernel"})).await;
        assert_eq!(s, StatusCode::CREATED, "{img}");
        let image = img["id"].as_str().unwrap().to_owned();
        for role in ["kernel", "initrd"] {
            let req = Request::builder()
                .method(Method::PUT)
                .uri(format!("/v1/images/{image}/files/{role}"))
                .header("authorization", format!("Bearer {t}"))
                .header("content-type", "application/octet-stream")
                .body(Body::from(format!("{role} bytes")))
                .unwrap();
            let (s, b) = c.send(req).await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        let ec2 = Ec2::new(&c, &t).await;
        let run = [
            ("Action", "RunInstances"),
            ("ImageId", image.as_str()),
            ("InstanceType", "mini"),
            ("MinCount", "1"),
            ("MaxCount", "1"),
        ];
        let id = first(&ec2.ok(&run).await, "instanceId").unwrap();
        c.wait_state(&t, &id, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;
        ec2.ok(&[("Action", "DeregisterImage"), ("ImageId", &image)]).await;
        ec2.err(
            &[("Action", "DescribeImages"), ("ImageId.1", &image)],
            StatusCode::BAD_REQUEST,
            "InvalidAMIID.NotFound",
        )
        .await;
        ec2.err(&run, StatusCode::BAD_REQUEST, "InvalidAMIID.NotFound").await;
        ec2.err(
            &[("Action", "DeregisterImage"), ("ImageId", &image)],
            StatusCode::BAD_REQUEST,
            "InvalidAMIID.NotFound",
        )
        .await;
        // The instance keeps running: its host still gets its desired state, stop and start work.
        let desired = agent.sync(&c, vec![]).await;
        assert!(desired.instances.iter().any(|d| d.id.as_str() == id), "the agent still runs it");
        ec2.ok(&[("Action", "StopInstances"), ("InstanceId.1", &id)]).await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "stopped").await;
        ec2.ok(&[("Action", "StartInstances"), ("InstanceId.1", &id)]).await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;
        assert_eq!(kumo_api::image_uploads::finish_deregistered(&c.controller.state).await.unwrap(), 0, "still in use");
        ec2.ok(&[("Action", "TerminateInstances"), ("InstanceId.1", &id)]).await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "deleted").await;
        assert_eq!(kumo_api::image_uploads::finish_deregistered(&c.controller.state).await.unwrap(), 1);
        let (s, _) = c.get(&format!("/v1/images/{image}"), &t).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn modify_volume_grows_online_and_describe_volumes_modifications_follows_it() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let ec2 = Ec2::new(&c, &t).await;
        let b = ec2.ok(&[("Action", "CreateVolume"), ("AvailabilityZone", "zone-1"), ("Size", "1")]).await;
        let vol = first(&b, "volumeId").unwrap();
        agent.converge_storage(&c, None).await;
        for bad in ["1", "0"] {
            ec2.err(
                &[("Action", "ModifyVolume"), ("VolumeId", &vol), ("Size", bad)],
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
            )
            .await;
        }
        ec2.err(
            &[("Action", "ModifyVolume"), ("VolumeId", &vol), ("Size", "2"), ("Iops", "3000")],
            StatusCode::BAD_REQUEST,
            "UnsupportedOperation",
        )
        .await;
        ec2.err(
            &[("Action", "ModifyVolume"), ("VolumeId", &vol), ("Size", "2"), ("DryRun", "true")],
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
        )
        .await;
        let b = ec2.ok(&[("Action", "ModifyVolume"), ("VolumeId", &vol), ("Size", "3")]).await;
        assert_eq!(first(&b, "modificationState").as_deref(), Some("modifying"), "{b}");
        assert_eq!((first(&b, "originalSize"), first(&b, "targetSize")), (Some("1".into()), Some("3".into())), "{b}");
        agent.converge_storage(&c, None).await;
        let b = ec2.ok(&[("Action", "DescribeVolumesModifications"), ("VolumeId.1", &vol)]).await;
        assert_eq!(first(&b, "modificationState").as_deref(), Some("completed"), "{b}");
        let b = ec2.ok(&[("Action", "DescribeVolumes"), ("VolumeId.1", &vol)]).await;
        assert_eq!(first(&b, "size").as_deref(), Some("3"), "{b}");
        let b = ec2
            .ok(&[
                ("Action", "DescribeVolumesModifications"),
                ("Filter.1.Name", "modification-state"),
                ("Filter.1.Value.1", "modifying"),
            ])
            .await;
        assert!(b.contains("<volumeModificationSet></volumeModificationSet>"), "{b}");
    }
}

/// The `metadataOptions` members of an EC2 answer, in order.
fn metadata_options_of(xml: &str, container: &str) -> Vec<String> {
    let part = &elements(xml, container)[0];
    ["state", "httpTokens", "httpPutResponseHopLimit", "httpEndpoint", "httpProtocolIpv6", "instanceMetadataTags"]
        .iter()
        .map(|t| first(part, t).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn modify_instance_metadata_options_reaches_both_views_and_the_agent() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let t2 = c.tenant("rival").await;
        let image = c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let ec2 = Ec2::new(&c, &t).await;
        let rival = Ec2::new(&c, &t2).await;
        // RunInstances' MetadataOptions.* are kept; bad values change nothing.
        let launch = |extra: &'static [(&'static str, &'static str)]| {
            let mut p = vec![
                ("Action", "RunInstances"),
                ("ImageId", image.as_str()),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
            ];
            p.extend_from_slice(extra);
            p
        };
        ec2.err(
            &launch(&[("MetadataOptions.HttpTokens", "sometimes")]),
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        )
        .await;
        ec2.err(
            &launch(&[("MetadataOptions.HttpPutResponseHopLimit", "65")]),
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
        )
        .await;
        assert!(ec2.ok(&[("Action", "DescribeInstances")]).await.contains("<reservationSet></reservationSet>"));
        let out = ec2
            .ok(&launch(&[
                ("MetadataOptions.HttpTokens", "required"),
                ("MetadataOptions.HttpPutResponseHopLimit", "2"),
            ]))
            .await;
        let id = first(&out, "instanceId").unwrap();
        assert_eq!(
            metadata_options_of(&out, "metadataOptions"),
            ["applied", "required", "2", "enabled", "disabled", "disabled"]
        );
        c.wait_state(&t, &id, "building").await;
        ec2.ok(&[
            ("Action", "CreateTags"),
            ("ResourceId.1", &id),
            ("Tag.1.Key", "Name"),
            ("Tag.1.Value", "web"),
            ("Tag.2.Key", "role"),
            ("Tag.2.Value", "db"),
        ])
        .await;
        let desired = agent.converge(&c).await;
        let mine = desired.instances.iter().find(|d| d.id.as_str() == id).unwrap();
        assert_eq!(mine.metadata.options.http_tokens, kumo_wire::network::HttpTokens::Required);
        assert_eq!(mine.metadata.options.http_put_response_hop_limit, 2);
        // InstanceMetadataTags is disabled: the guest is not told its tags.
        assert_eq!(mine.metadata.tags, Vec::<(String, String)>::new());
        c.wait_state(&t, &id, "running").await;

        // The action: named options change, the others stay; the answer says pending.
        let modify = |extra: &[(&'static str, &'static str)]| {
            let mut p = vec![("Action", "ModifyInstanceMetadataOptions"), ("InstanceId", id.as_str())];
            p.extend_from_slice(extra);
            p
        };
        let b = ec2
            .ok(&modify(&[
                ("HttpTokens", "optional"),
                ("HttpEndpoint", "disabled"),
                ("InstanceMetadataTags", "enabled"),
            ]))
            .await;
        assert_eq!(first(&b, "instanceId").as_deref(), Some(id.as_str()), "{b}");
        assert_eq!(
            metadata_options_of(&b, "instanceMetadataOptions"),
            ["pending", "optional", "2", "disabled", "disabled", "enabled"]
        );
        let d = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", &id)]).await;
        assert_eq!(
            metadata_options_of(&d, "metadataOptions"),
            ["applied", "optional", "2", "disabled", "disabled", "enabled"]
        );
        // The native API reads the same values back.
        let (s, native) = c.get(&format!("/v1/instances/{id}"), &t).await;
        assert_eq!(s, StatusCode::OK, "{native}");
        assert_eq!(
            native["metadata_options"],
            serde_json::json!({"http_tokens": "optional", "http_put_response_hop_limit": 2, "http_endpoint": "disabled",
                "http_protocol_ipv6": "disabled", "instance_metadata_tags": "enabled"})
        );
        // The agent's next desired state carries them.
        let desired = agent.converge(&c).await;
        let mine = desired.instances.iter().find(|d| d.id.as_str() == id).unwrap();
        assert_eq!(mine.metadata.options.http_endpoint, kumo_wire::network::Switch::Disabled);
        // Enabled: the instance's EC2 tags reach the agent, sorted, and follow DeleteTags.
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(mine.metadata.tags, pairs(&[("Name", "web"), ("role", "db")]));
        ec2.ok(&[("Action", "DeleteTags"), ("ResourceId.1", &id), ("Tag.1.Key", "role")]).await;
        let desired = agent.converge(&c).await;
        let mine = desired.instances.iter().find(|d| d.id.as_str() == id).unwrap();
        assert_eq!(mine.metadata.tags, pairs(&[("Name", "web")]));

        // DryRun: 412 and nothing changes.
        ec2.err(
            &modify(&[("HttpTokens", "required"), ("DryRun", "true")]),
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
        )
        .await;
        // Bad values, unknown and other projects' instances: AWS's codes, nothing changes.
        for bad in [
            &[("HttpTokens", "always")][..],
            &[("HttpEndpoint", "on")],
            &[("HttpProtocolIpv6", "yes")],
            &[("InstanceMetadataTags", "true")],
            &[("HttpPutResponseHopLimit", "0")],
            &[("HttpPutResponseHopLimit", "65")],
            &[("HttpPutResponseHopLimit", "two")],
        ] {
            ec2.err(&modify(bad), StatusCode::BAD_REQUEST, "InvalidParameterValue").await;
        }
        ec2.err(
            &[
                ("Action", "ModifyInstanceMetadataOptions"),
                ("InstanceId", "i-0123456789abcdef0"),
                ("HttpTokens", "required"),
            ],
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.NotFound",
        )
        .await;
        rival
            .err(
                &[("Action", "ModifyInstanceMetadataOptions"), ("InstanceId", &id), ("HttpTokens", "required")],
                StatusCode::BAD_REQUEST,
                "InvalidInstanceID.NotFound",
            )
            .await;
        ec2.err(&[("Action", "ModifyInstanceMetadataOptions")], StatusCode::BAD_REQUEST, "MissingParameter").await;
        let d = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", &id)]).await;
        assert_eq!(
            metadata_options_of(&d, "metadataOptions"),
            ["applied", "optional", "2", "disabled", "disabled", "enabled"]
        );

        // The native API accepts them at launch, validates them, and EC2 shows them.
        let (s, b) = c
            .post(
                "/v1/instances",
                &t,
                serde_json::json!({"name": "native", "flavor": "mini",
                    "metadata_options": {"http_tokens": "required", "http_put_response_hop_limit": 3}}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let native_id = b["instances"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(b["instances"][0]["metadata_options"]["http_tokens"], "required");
        let d = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", &native_id)]).await;
        assert_eq!(
            metadata_options_of(&d, "metadataOptions"),
            ["applied", "required", "3", "enabled", "disabled", "disabled"]
        );
        for bad in [
            serde_json::json!({"http_put_response_hop_limit": 0}),
            serde_json::json!({"http_put_response_hop_limit": 65}),
            serde_json::json!({"http_tokens": "sometimes"}),
            serde_json::json!({"hop_limit": 2}),
        ] {
            let (s, b) = c
                .post(
                    "/v1/instances",
                    &t,
                    serde_json::json!({"name": "bad", "flavor": "mini", "metadata_options": bad}),
                )
                .await;
            assert!(s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST, "{bad}: {s} {b}");
        }
        let (_, list) = c.get("/v1/instances?name=bad", &t).await;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    }
}

#[tokio::test]
async fn address_domain_names_are_set_shown_and_reset() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let t2 = c.tenant("rival").await;
        let (s, b) = c
            .post(
                "/v1/networks",
                &c.admin,
                serde_json::json!({"name": "public", "cidr": "203.0.113.0/29", "external": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let ec2 = Ec2::new(&c, &t).await;
        let rival = Ec2::new(&c, &t2).await;
        let alloc = ec2.ok(&[("Action", "AllocateAddress"), ("Domain", "vpc")]).await;
        let id = first(&alloc, "allocationId").unwrap();
        let ip = first(&alloc, "publicIp").unwrap();
        let describe = || ec2.ok(&[("Action", "DescribeAddressesAttribute"), ("Attribute", "domain-name")]);
        let d = describe().await;
        assert_eq!(all(&d, "allocationId"), [id.clone()], "{d}");
        assert_eq!(all(&d, "publicIp"), [ip.clone()]);
        assert!(all(&d, "ptrRecord").is_empty(), "no PTR name yet: {d}");
        // Set: AWS's answer (update pending), then shown.
        let m = ec2
            .ok(&[("Action", "ModifyAddressAttribute"), ("AllocationId", &id), ("DomainName", "Mail.Example.com")])
            .await;
        assert_eq!(first(&elements(&m, "ptrRecordUpdate")[0], "value").as_deref(), Some("mail.example.com."), "{m}");
        assert_eq!(first(&m, "status").as_deref(), Some("PENDING"));
        let d = ec2
            .ok(&[("Action", "DescribeAddressesAttribute"), ("AllocationId.1", &id), ("Attribute", "domain-name")])
            .await;
        assert_eq!(all(&d, "ptrRecord"), ["mail.example.com."], "{d}");
        // Errors change nothing.
        for (params, code) in [
            (
                vec![("Action", "ModifyAddressAttribute"), ("AllocationId", id.as_str()), ("DomainName", "bad_name")],
                "InvalidParameterValue",
            ),
            (vec![("Action", "ModifyAddressAttribute"), ("AllocationId", id.as_str())], "MissingParameter"),
            (vec![("Action", "DescribeAddressesAttribute"), ("Attribute", "color")], "InvalidParameterValue"),
            (
                vec![("Action", "ResetAddressAttribute"), ("AllocationId", id.as_str()), ("Attribute", "color")],
                "InvalidParameterValue",
            ),
            (vec![("Action", "ResetAddressAttribute"), ("AllocationId", id.as_str())], "MissingParameter"),
            (
                vec![("Action", "ModifyAddressAttribute"), ("AllocationId", "eipalloc-nothing"), ("DomainName", "a.b")],
                "InvalidAllocationID.Malformed",
            ),
            (
                vec![
                    ("Action", "ModifyAddressAttribute"),
                    ("AllocationId", id.as_str()),
                    ("DomainName", "a.b"),
                    ("DryRun", "true"),
                ],
                "DryRunOperation",
            ),
        ] {
            let status =
                if code == "DryRunOperation" { StatusCode::PRECONDITION_FAILED } else { StatusCode::BAD_REQUEST };
            ec2.err(&params, status, code).await;
        }
        for action in ["ModifyAddressAttribute", "ResetAddressAttribute", "DescribeAddressesAttribute"] {
            let (k, v) = if action == "DescribeAddressesAttribute" {
                ("AllocationId.1", id.as_str())
            } else {
                ("AllocationId", id.as_str())
            };
            rival
                .err(
                    &[("Action", action), (k, v), ("DomainName", "x.example.com"), ("Attribute", "domain-name")],
                    StatusCode::BAD_REQUEST,
                    "InvalidAllocationID.NotFound",
                )
                .await;
        }
        assert_eq!(all(&describe().await, "ptrRecord"), ["mail.example.com."]);
        // Reset removes it.
        let r =
            ec2.ok(&[("Action", "ResetAddressAttribute"), ("AllocationId", &id), ("Attribute", "domain-name")]).await;
        assert_eq!(first(&r, "ptrRecord").as_deref(), Some("mail.example.com."), "the old name: {r}");
        assert!(all(&describe().await, "ptrRecord").is_empty());
        // A released address takes its name along.
        ec2.ok(&[("Action", "ModifyAddressAttribute"), ("AllocationId", &id), ("DomainName", "a.example.com")]).await;
        ec2.ok(&[("Action", "ReleaseAddress"), ("AllocationId", &id)]).await;
        assert!(all(&describe().await, "allocationId").is_empty());
    }
}
