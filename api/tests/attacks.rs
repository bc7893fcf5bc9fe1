//! The attack list (issue 12): a hostile tenant (or someone who saw one of a
//! tenant's requests on the wire) against the controller's router, each
//! attack refused and changing nothing. One test per attack, named after it.
//! On SQLite and (when configured) PostgreSQL where the database matters.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use http_body_util::BodyExt;
use kumo_api::ec2::sigv4::{self, Credential};
use serde_json::json;
use tower::ServiceExt;

/// A tenant's access key, and requests signed with it.
struct Key {
    id: String,
    secret: String,
}

impl Key {
    async fn new(c: &Cloud, token: &str) -> Self {
        let (s, b) = c.call(Method::POST, "/v1/access-keys", Some(token), None).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        Key { id: b["access_key_id"].as_str().unwrap().into(), secret: b["secret_access_key"].as_str().unwrap().into() }
    }

    fn credential(&self, amz_date: &str) -> Credential {
        Credential {
            access_key_id: self.id.clone(),
            date: amz_date[..8].to_owned(),
            region: "kumo-1".into(),
            service: "ec2".into(),
        }
    }

    /// The headers of a header-signed request (as boto3 signs them).
    fn sign(&self, method: &str, query: &str, body: &str) -> HeaderMap {
        let amz_date = sigv4::format_amz_date(kumo_wire::Timestamp::now().millis() / 1000);
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("localhost"));
        headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
        headers.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"));
        let invocation = kumo_wire::InstanceId::generate().as_str().to_owned();
        headers.insert("amz-sdk-invocation-id", HeaderValue::from_str(&invocation).unwrap());
        let signed: Vec<String> =
            ["amz-sdk-invocation-id", "content-type", "host", "x-amz-date"].map(str::to_owned).to_vec();
        let req = sigv4::Request { method, path: "/", query, headers: &headers, body: body.as_bytes() };
        let auth = sigv4::sign(&req, &self.credential(&amz_date), &self.secret, &signed, &amz_date);
        headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        headers
    }

    /// A presigned query string for `query`.
    fn presign(&self, method: &str, query: &str) -> String {
        let amz_date = sigv4::format_amz_date(kumo_wire::Timestamp::now().millis() / 1000);
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("localhost"));
        let req = sigv4::Request { method, path: "/", query, headers: &headers, body: b"" };
        sigv4::presign(&req, &self.credential(&amz_date), &self.secret, &amz_date, 300)
    }
}

fn body_of(params: &[(&str, &str)]) -> String {
    let mut all = vec![("Version", "2016-11-15")];
    all.extend_from_slice(params);
    serde_urlencoded::to_string(&all).unwrap()
}

async fn send(c: &Cloud, method: Method, query: &str, headers: &HeaderMap, body: &str) -> (StatusCode, String) {
    let uri = if query.is_empty() { "/".to_owned() } else { format!("/?{query}") };
    let mut builder = Request::builder().method(method).uri(uri).header("host", "localhost");
    for (k, v) in headers {
        if k != "host" {
            builder = builder.header(k, v);
        }
    }
    let resp = c.router.clone().oneshot(builder.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = resp.status();
    (status, String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
}

/// A tenant with one key pair, so that a leak of `DescribeKeyPairs` shows.
async fn victim(c: &Cloud) -> Key {
    let t = c.tenant("victim").await;
    let key = Key::new(c, &t).await;
    let body = body_of(&[("Action", "CreateKeyPair"), ("KeyName", "secret-pair")]);
    let (s, b) = send(c, Method::POST, "", &key.sign("POST", "", &body), &body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    key
}

/// Issue 12 item 3, as reported: a boto3-signed `DescribeInstances` POST with
/// its body swapped for `DescribeKeyPairs` and the original body's SHA-256
/// claimed in `x-amz-content-sha256` was answered 200 with the key pairs.
#[tokio::test]
async fn sigv4_body_swapped_under_a_claimed_content_hash_is_refused() {
    let c = cloud("sqlite", |_| {}).await;
    let key = victim(&c).await;
    let signed = body_of(&[("Action", "DescribeInstances")]);
    let mut headers = key.sign("POST", "", &signed);
    headers.insert("x-amz-content-sha256", HeaderValue::from_str(&sigv4::sha256_hex(signed.as_bytes())).unwrap());
    let swapped = body_of(&[("Action", "DescribeKeyPairs")]);
    let (s, b) = send(&c, Method::POST, "", &headers, &swapped).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b.contains("<Code>AuthFailure</Code>") && b.contains("x-amz-content-sha256"), "{b}");
    assert!(!b.contains("secret-pair"), "{b}");
    // The header with the true hash of the body sent is accepted (it is what S3-style clients send).
    let mut headers = key.sign("POST", "", &signed);
    headers.insert("x-amz-content-sha256", HeaderValue::from_str(&sigv4::sha256_hex(signed.as_bytes())).unwrap());
    assert_eq!(send(&c, Method::POST, "", &headers, &signed).await.0, StatusCode::OK);
}

/// Identical header-signed requests are answered as AWS answers them (the
/// AWS CLI and boto3 sign no per-call header, so a repeated call in the same
/// second carries the same signature): a repeated change gets its real
/// answer, here the duplicate's error, and a swapped body is still refused.
#[tokio::test]
async fn identical_signed_requests_get_their_real_answers() {
    let c = cloud("sqlite", |_| {}).await;
    let key = victim(&c).await;
    let change = body_of(&[("Action", "CreateKeyPair"), ("KeyName", "twice")]);
    let headers = key.sign("POST", "", &change);
    let (s, b) = send(&c, Method::POST, "", &headers, &change).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = send(&c, Method::POST, "", &headers, &change).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("InvalidKeyPair.Duplicate") && !b.contains("keyMaterial"), "{b}");
    let swapped = body_of(&[("Action", "CreateKeyPair"), ("KeyName", "other")]);
    let (s, b) = send(&c, Method::POST, "", &headers, &swapped).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
}

/// A presigned URL carries no body of the attacker's choosing (which its
/// signature does not cover); a presigned change acts once.
#[tokio::test]
async fn presigned_url_replayed_or_with_a_new_body_is_refused() {
    let c = cloud("sqlite", |_| {}).await;
    let key = victim(&c).await;
    let none = HeaderMap::new();
    let query = key.presign("POST", "Action=DescribeRegions&Version=2016-11-15");
    // (A body repeating a query parameter is refused as a duplicate before that.)
    let (s, b) = send(&c, Method::POST, &query, &none, "KeyName.1=secret-pair").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b.contains("presigned request carries no body") && !b.contains("keyFingerprint"), "{b}");
    let change = key.presign("POST", "Action=CreateKeyPair&KeyName=once&Version=2016-11-15");
    let (s, b) = send(&c, Method::POST, &change, &none, "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = send(&c, Method::POST, &change, &none, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b.contains("already used"), "{b}");
}

/// A presigned URL must sign `host`, as a header signature must.
#[tokio::test]
async fn presigned_url_without_host_among_the_signed_headers_is_refused() {
    let c = cloud("sqlite", |_| {}).await;
    let key = victim(&c).await;
    let query = key.presign("GET", "Action=DescribeKeyPairs&Version=2016-11-15");
    let without_host = query.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=");
    let (s, b) = send(&c, Method::GET, &without_host, &HeaderMap::new(), "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b.contains("must include host") && !b.contains("secret-pair"), "{b}");
}

/// A GET carries its parameters in the (signed) query; a body is refused.
#[tokio::test]
async fn get_with_a_body_is_refused() {
    let c = cloud("sqlite", |_| {}).await;
    let key = victim(&c).await;
    let query = "Action=DescribeKeyPairs&Version=2016-11-15";
    let body = "KeyName.1=secret-pair";
    let (s, b) = send(&c, Method::GET, query, &key.sign("GET", query, body), body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b.contains("GET request carries no body") && !b.contains("keyFingerprint"), "{b}");
}

/// The body never overrides a parameter of the query string (`params.rs`
/// let a body's `Action` replace the query's).
#[tokio::test]
async fn body_parameter_overriding_the_signed_query_is_refused() {
    let c = cloud("sqlite", |_| {}).await;
    let key = victim(&c).await;
    let query = "Action=DescribeRegions&Version=2016-11-15";
    let body = "Action=DescribeKeyPairs";
    let (s, b) = send(&c, Method::POST, query, &key.sign("POST", query, body), body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("Action is given more than once") && !b.contains("secret-pair"), "{b}");
}

/// Issue 12 item 1: tenant networks (and their gateways) over infrastructure
/// ranges are refused and nothing is recorded: the fixed ranges, the
/// operator's `reserved_cidrs`, the controller's `listen` address.
#[tokio::test]
async fn tenant_network_over_reserved_or_infrastructure_ranges_is_refused() {
    for backend in backends() {
        let c = cloud(backend, |cfg| {
            cfg.reserved_cidrs = "10.10.0.0/16, 192.0.2.0/24".into();
            cfg.listen = "198.51.100.7:8774".into();
        })
        .await;
        let t = c.tenant("mallory").await;
        for (cidr, gateway, why) in [
            ("0.0.0.0/1", None, "'this network'"),
            ("127.0.0.0/29", None, "loopback"),
            ("169.254.169.248/29", None, "link-local"),
            ("224.0.0.0/24", None, "multicast"),
            ("240.0.0.0/24", None, "reserved (240"),
            ("10.0.0.0/8", None, "reserved_cidrs 10.10.0.0/16"),
            ("10.10.7.0/24", None, "reserved_cidrs 10.10.0.0/16"),
            ("192.0.2.0/25", None, "reserved_cidrs 192.0.2.0/24"),
            ("198.51.100.0/29", None, "the controller's address 198.51.100.7"),
            ("198.51.100.0/24", Some("198.51.100.7"), "the controller's address 198.51.100.7"),
        ] {
            let mut body = json!({"name": "evil", "cidr": cidr});
            if let Some(g) = gateway {
                body["gateway"] = json!(g);
            }
            let (s, b) = c.post("/v1/networks", &t, body).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{cidr}: {b}");
            assert!(b["message"].as_str().unwrap().contains(why), "{cidr}: {b}");
        }
        // Even an admin's external network cannot take the fixed ranges.
        let (s, b) =
            c.post("/v1/networks", &c.admin, json!({"name": "ext", "cidr": "127.0.0.0/24", "external": true})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        let (_, list) = c.get("/v1/networks", &t).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing recorded: {list}");
        // A free range works.
        let (s, b) = c.post("/v1/networks", &t, json!({"name": "ok", "cidr": "10.11.0.0/24"})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
}

/// A project's default network takes `10.<hi>.<lo>.0/24` from its VLAN tag;
/// a tag whose subnet is reserved is skipped, and when every free tag's is,
/// the launch is refused with a clear message.
#[tokio::test]
async fn default_network_never_lands_on_a_reserved_range() {
    let c = cloud("sqlite", |cfg| {
        cfg.reserved_cidrs = "10.0.100.0/24".into();
        cfg.vlan_range = "100-101".into();
    })
    .await;
    c.kernel_image("tiny").await;
    FakeAgent::register(&c, "host-a", CAPACITY).await;
    let t = c.tenant("acme").await;
    c.run(&t, "web", "mini").await;
    let (_, list) = c.get("/v1/networks", &t).await;
    assert_eq!(list["items"][0]["cidr"], "10.0.101.0/24", "{list}");
    let other = c.tenant("other").await;
    let (s, b) = c.post("/v1/instances", &other, json!({"name": "web", "flavor": "mini"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b["message"].as_str().unwrap().contains("outside the reserved ranges"), "{b}");
    let (_, list) = c.get("/v1/networks", &other).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
}

fn login_request(user: &str, password: &str, from: [u8; 4]) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/auth/tokens")
        .header("content-type", "application/json")
        .body(Body::from(json!({"username": user, "password": password}).to_string()))
        .unwrap();
    let peer = std::net::SocketAddr::from((from, 40000));
    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    req
}

/// Issue 12 item 5: a flood of wrong passwords is answered 429 with
/// `Retry-After` (no Argon2 run for those), the victim's right password too
/// while the backoff lasts, another user's login from elsewhere still works,
/// and the throttle's memory stays bounded under names it never saw.
#[tokio::test]
async fn login_flood_is_throttled_and_other_users_still_log_in() {
    let c = cloud("sqlite", |cfg| {
        cfg.login_free_attempts = 3;
        cfg.login_tracked_max = 20;
    })
    .await;
    c.tenant("victim").await;
    c.tenant("bystander").await;
    let attacker = [203, 0, 113, 9];
    let mut statuses = Vec::new();
    while statuses.len() < 10 && statuses.last() != Some(&StatusCode::TOO_MANY_REQUESTS) {
        statuses.push(c.send(login_request("victim-user", "guess", attacker)).await.0);
    }
    assert_eq!(
        statuses,
        [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS]
    );
    // The flood goes on: every attempt is refused at once (no hash runs), with Retry-After.
    for _ in 0..20 {
        let resp = c.router.clone().oneshot(login_request("victim-user", "guess", attacker)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        assert!(retry_after.is_some_and(|r| r >= 1), "{retry_after:?}");
    }
    // The right password does not get through while the user backs off.
    let (s, b) = c.send(login_request("victim-user", "password-123", [192, 0, 2, 50])).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(b["code"], "too_many_requests");
    // Another user, from another address, logs in.
    let (s, b) = c.send(login_request("bystander-user", "password-123", [192, 0, 2, 51])).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Unknown names are throttled alike, and the throttle forgets the oldest past its bound.
    for i in 0..30u8 {
        let (s, _) = c.send(login_request(&format!("nobody-{i}"), "guess", [198, 51, 100, i])).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(c.controller.state.guards.login.tracked() <= 20);
    }
}

/// Issue 12 item 13: a token revoked by logout (`DELETE /v1/auth/tokens`)
/// is refused at once, and the panel's pages forbid framing and foreign
/// scripts (Content-Security-Policy, X-Frame-Options).
#[tokio::test]
async fn revoked_token_is_refused_and_panel_pages_cannot_be_framed() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        assert_eq!(c.get("/v1/instances", &t).await.0, StatusCode::OK);
        assert_eq!(c.delete("/v1/auth/tokens", &t).await.0, StatusCode::NO_CONTENT);
        let (s, b) = c.get("/v1/instances", &t).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        assert_eq!(c.delete("/v1/auth/tokens", &t).await.0, StatusCode::UNAUTHORIZED);
        // Other tokens of the same user still work.
        let again = c.login("acme-user", "password-123").await;
        assert_eq!(c.get("/v1/instances", &again).await.0, StatusCode::OK);
    }
    let c = cloud("sqlite", |_| {}).await;
    let resp = c.router.clone().oneshot(Request::get("/ui/login").body(Body::empty()).unwrap()).await.unwrap();
    let csp = resp.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(resp.headers().get("x-frame-options").unwrap(), "DENY");
}

fn registration(name: &str) -> serde_json::Value {
    serde_json::to_value(kumo_wire::agent::RegisterRequest {
        join_token: "join-secret".into(),
        name: name.into(),
        agent_url: "http://127.0.0.1:9".into(),
        capacity: CAPACITY,
        hypervisor: "qemu".into(),
        availability_zone: "zone-1".into(),
        volume_backends: vec![],
    })
    .unwrap()
}

/// Issue 12 item 11: a holder of the join token cannot take over a known
/// host's name (and its desired state); the host's own token, or an admin's
/// approval, re-registers it.
#[tokio::test]
async fn known_host_name_does_not_re_register_with_the_join_token_alone() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (s, b) = c.call(Method::POST, "/agent/v1/register", None, Some(registration("host-a"))).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        assert!(b["message"].as_str().unwrap().contains("already registered"), "{b}");
        // Nothing changed: the host's token still works.
        agent.sync(&c, vec![]).await;
        // With its current token, the host re-registers (and gets a new token).
        let (s, b) =
            c.call(Method::POST, "/agent/v1/register", Some(&agent.host_token), Some(registration("host-a"))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["host_id"], agent.host_id.as_str());
        // An admin's approval lets the join token in once.
        let (s, _) = c.call(Method::POST, "/v1/hosts/host-a/approve-enrolment", Some(&c.admin), None).await;
        assert_eq!(s, StatusCode::OK);
        let (s, b) = c.call(Method::POST, "/agent/v1/register", None, Some(registration("host-a"))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = c.call(Method::POST, "/agent/v1/register", None, Some(registration("host-a"))).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        // A tenant cannot approve.
        let t = c.tenant("mallory").await;
        let (s, _) = c.call(Method::POST, "/v1/hosts/host-a/approve-enrolment", Some(&t), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
}

/// Issue 12 item 4: a tenant flooding rules, groups, networks and key pairs
/// is stopped at its quotas (refused with the quota named, nothing recorded),
/// and `kumo quota show` lists the new quotas with their use.
#[tokio::test]
async fn resource_floods_stop_at_the_quotas() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("mallory").await;
        let limits = json!({"rules_per_group": 3, "security_groups": 2, "networks": 1, "key_pairs": 1, "images": 0});
        let (s, b) = c.call(Method::PUT, "/v1/projects/mallory/quotas", Some(&c.admin), Some(limits)).await;
        assert!(s.is_success(), "{b}");
        let (s, b) = c.post("/v1/security-groups", &t, json!({"name": "web"})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let group = b["id"].as_str().unwrap().to_owned();
        // The group's default egress rule counts: two more fit.
        for port in 1..=3u16 {
            let rule = json!({"protocol": "tcp", "ports": {"first": port, "last": port}, "cidr": "0.0.0.0/0"});
            let (s, b) = c.post(&format!("/v1/security-groups/{group}/rules"), &t, rule).await;
            if port <= 2 {
                assert!(s.is_success(), "{port}: {b}");
            } else {
                assert_eq!((s, b["code"].as_str()), (StatusCode::FORBIDDEN, Some("quota_exceeded")), "{b}");
                assert!(b["message"].as_str().unwrap().contains("rules_per_group"), "{b}");
            }
        }
        let (_, g) = c.get(&format!("/v1/security-groups/{group}"), &t).await;
        assert_eq!(g["rules"].as_array().unwrap().len(), 3, "{g}");
        assert_eq!(c.post("/v1/security-groups", &t, json!({"name": "db"})).await.0, StatusCode::CREATED);
        let (s, b) = c.post("/v1/security-groups", &t, json!({"name": "cache"})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        assert!(b["message"].as_str().unwrap().contains("security_groups"), "{b}");
        assert_eq!(
            c.post("/v1/networks", &t, json!({"name": "a", "cidr": "10.1.0.0/24"})).await.0,
            StatusCode::CREATED
        );
        let (s, b) = c.post("/v1/networks", &t, json!({"name": "b", "cidr": "10.2.0.0/24"})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        assert_eq!(c.post("/v1/keypairs", &t, json!({"name": "k1"})).await.0, StatusCode::CREATED);
        let (s, b) = c.post("/v1/keypairs", &t, json!({"name": "k2"})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let (s, b) = c.post("/v1/images", &t, json!({"name": "mine", "kind": "kernel"})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let (_, q) = c.get("/v1/quotas", &t).await;
        let used =
            |r: &str| q["quotas"].as_array().unwrap().iter().find(|x| x["resource"] == r).unwrap()["in_use"].clone();
        assert_eq!(
            [used("rules_per_group"), used("security_groups"), used("networks"), used("key_pairs"), used("images")],
            [json!(3), json!(2), json!(1), json!(1), json!(0)],
            "{q}"
        );
    }
}

/// Issue 12 item 7: an active image's files are immutable (guests run on
/// them): a re-upload is refused with 409 and the stored file is unchanged.
#[tokio::test]
async fn re_upload_of_an_active_image_is_refused() {
    let c = cloud("sqlite", |_| {}).await;
    let id = c.kernel_image("tiny").await;
    let (_, before) = c.get(&format!("/v1/images/{id}"), &c.admin).await;
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/images/{id}/files/kernel"))
        .header("authorization", format!("Bearer {}", c.admin))
        .header("content-type", "application/octet-stream")
        .body(Body::from("evil kernel"))
        .unwrap();
    let (s, b) = c.send(req).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b["message"].as_str().unwrap().contains("immutable"), "{b}");
    let (_, after) = c.get(&format!("/v1/images/{id}"), &c.admin).await;
    assert_eq!(before, after);
    let file = c.controller.state.images.file_path(&id.parse().unwrap(), kumo_wire::api::ImageFileRole::Kernel);
    assert_eq!(std::fs::read(file).unwrap(), b"kernel bytes");
}

/// Issue 12 item 9: the admin sees an agent's clock skew (here 90 s ahead)
/// on the host list (its observed times are clamped, see reconcile's tests).
#[tokio::test]
async fn an_agent_with_a_fast_clock_shows_its_skew_on_the_host_list() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (_, hosts) = c.get("/v1/hosts", &c.admin).await;
        assert_eq!(hosts["items"][0]["clock_skew_ms"], json!(null), "unknown before a sync: {hosts}");
        let mut req = FakeAgent::request(vec![]);
        req.sent_at = Some(kumo_wire::Timestamp::now().plus_millis(90_000));
        agent.send_sync(&c, req).await;
        let (s, hosts) = c.get("/v1/hosts", &c.admin).await;
        assert_eq!(s, StatusCode::OK, "{hosts}");
        let skew = hosts["items"][0]["clock_skew_ms"].as_i64().unwrap();
        assert!((85_000..=90_000).contains(&skew), "skew {skew} ms, wanted about 90 s: {hosts}");
        // An older agent that sends no clock leaves the skew unknown, not zero.
        agent.send_sync(&c, FakeAgent::request(vec![])).await;
        let (_, host) = c.get("/v1/hosts/host-a", &c.admin).await;
        assert_eq!(host["clock_skew_ms"], json!(null), "{host}");
    }
}
