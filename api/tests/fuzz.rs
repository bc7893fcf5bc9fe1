//! Property tests of two parsers at the controller's trust boundaries, through
//! the whole router: the agent's sync payload (what a compromised or buggy
//! host sends) and the panel's form bodies (what any browser sends). Whatever
//! arrives, the answer is a clear 2xx/3xx/4xx, never a 5xx or a panic, and
//! the controller still serves its honest callers afterwards.
//!
//! 1,000 cases each by default; `PROPTEST_CASES=100000 cargo test -p kumo-api
//! --test integration -- fuzz::` runs more.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{cloud, Cloud, FakeAgent, CAPACITY};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use tower::ServiceExt;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1_000)
}

/// JSON of every shape, with the values that break careless parsers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(json!(u64::MAX)),
            Just(json!(i64::MIN)),
            Just(json!(-1)),
            Just(json!(0)),
            Just(json!(1.5e300)),
            any::<i64>().prop_map(|n| json!(n)),
        ],
        prop_oneof![
            Just(json!("")),
            Just(json!("i-0000000000000000a")),
            Just(json!("vol-0000000000000000a")),
            Just(json!("running")),
            Just(json!("../../etc/passwd")),
            Just(json!("1970-01-01T00:00:00Z")),
            Just(json!("9999-12-31T23:59:59Z")),
            Just(json!("\u{0}\u{202e}日本語")),
            ".{0,40}".prop_map(Value::String),
        ],
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every place in `v` (as JSON pointers), the root included.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| pointers(x, format!("{at}/{k}"), out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| pointers(x, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// One change to a valid payload.
#[derive(Debug, Clone)]
enum Mutation {
    /// A leaf becomes another value of the same JSON type (so the payload
    /// still parses and the handler's own checks are what is tried).
    Tweak(Index, Value, String),
    Replace(Index, Value),
    Remove(Index),
    AddField(Index, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (
            any::<Index>(),
            prop_oneof![
                Just(json!(u64::MAX)),
                Just(json!(0)),
                Just(json!(i64::MAX)),
                Just(json!(1u64 << 53)),
                any::<u32>().prop_map(|n| json!(n))
            ],
            prop_oneof![
                Just(String::new()),
                Just("i-0000000000000000a".to_owned()),
                Just("running".to_owned()),
                Just("shut_off".to_owned()),
                Just("9999-12-31T23:59:59Z".to_owned()),
                Just("1970-01-01T00:00:00Z".to_owned()),
                Just("x".repeat(70_000)),
                ".{0,20}"
            ]
        )
            .prop_map(|(i, n, t)| Mutation::Tweak(i, n, t)),
        2 => (any::<Index>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => (any::<Index>(), "[a-z_]{1,16}", json_value()).prop_map(|(i, k, v)| Mutation::AddField(i, k, v)),
    ]
}

fn apply(doc: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all);
    match m {
        Mutation::Tweak(i, number, text) => match doc.pointer_mut(i.get(&all).as_str()) {
            Some(slot @ Value::Number(_)) => *slot = number.clone(),
            Some(slot @ Value::String(_)) => *slot = Value::String(text.clone()),
            Some(Value::Bool(b)) => *b = !*b,
            _ => {}
        },
        Mutation::Replace(i, v) => {
            if let Some(slot) = doc.pointer_mut(i.get(&all).as_str()) {
                *slot = v.clone();
            }
        }
        Mutation::Remove(i) => {
            let p = i.get(&all).as_str();
            if let Some((parent, key)) = p.rsplit_once('/') {
                match doc.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(key);
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(n) = key.parse::<usize>() {
                            if n < a.len() {
                                a.remove(n);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Mutation::AddField(i, k, v) => {
            if let Some(Value::Object(o)) = doc.pointer_mut(i.get(&all).as_str()) {
                o.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A payload to send: a mutated valid document, or bytes that are not JSON at all.
#[derive(Debug, Clone)]
enum Payload {
    Mutated(Vec<Mutation>),
    Raw(Vec<u8>),
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        9 => prop::collection::vec(mutation(), 1..3).prop_map(Payload::Mutated),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Payload::Raw),
    ]
}

async fn send(c: &Cloud, req: Request<Body>) -> (StatusCode, String) {
    let resp = tokio::time::timeout(Duration::from_secs(20), c.router.clone().oneshot(req))
        .await
        .expect("the controller answered within 20 s")
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn agent_sync_payloads_never_fail_the_controller() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (c, agent, base) = rt.block_on(async {
        let c = cloud("sqlite", |_| {}).await;
        let agent = FakeAgent::register(&c, "fuzzed", CAPACITY).await;
        c.kernel_image("tiny").await;
        let tenant = c.tenant("acme").await;
        let launched = c.run(&tenant, "web", "mini").await;
        let desired = agent.sync(&c, vec![]).await;
        assert_eq!(desired.instances.len(), 1, "the launch reached the host");
        // A valid report: the launched instance running, one volume and one
        // snapshot entry, a notice and an unmanaged domain, so that every
        // part of the payload is there to be mutated.
        let mut req = FakeAgent::request(vec![kumo_wire::agent::ObservedInstance {
            id: launched["id"].as_str().unwrap().parse().unwrap(),
            power: kumo_wire::agent::ObservedPower::Running,
            applied_generation: desired.instances[0].generation,
            error: None,
            failed_generation: None,
            observed_at: kumo_wire::Timestamp::now(),
        }]);
        req.unmanaged_domains = vec!["somebody-elses".into()];
        req.known_revision = Some("not-the-current-one".into());
        let work = |id: &str| {
            serde_json::json!({"id": id, "applied_generation": 1, "error": null,
            "failed_generation": null, "stored_bytes": 4096, "observed_at": kumo_wire::Timestamp::now()})
        };
        let mut base = serde_json::to_value(&req).unwrap();
        base["observed_volumes"] = json!([work("vol-0000000000000000a")]);
        base["observed_snapshots"] = json!([work("snap-0000000000000000a")]);
        let honest = Request::builder()
            .method(Method::POST)
            .uri("/agent/v1/sync")
            .header(header::AUTHORIZATION, format!("Bearer {}", agent.host_token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(base.to_string()))
            .unwrap();
        let (status, text) = send(&c, honest).await;
        assert_eq!(status, StatusCode::OK, "the unmutated payload is valid: {text}");
        (c, agent, base)
    });

    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let result = runner.run(&payload(), |p| {
        let body = match &p {
            Payload::Mutated(ms) => {
                let mut doc = base.clone();
                ms.iter().for_each(|m| apply(&mut doc, m));
                // Never ask the controller to hold the request: that is a long poll, not an answer.
                if let Some(o) = doc.as_object_mut() {
                    o.insert("wait_ms".into(), json!(0));
                }
                doc.to_string().into_bytes()
            }
            Payload::Raw(bytes) => bytes.clone(),
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri("/agent/v1/sync")
            .header(header::AUTHORIZATION, format!("Bearer {}", agent.host_token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, text) = rt.block_on(send(&c, req));
        *seen.borrow_mut().entry(status.as_u16()).or_default() += 1;
        if status.is_server_error() {
            return Err(TestCaseError::fail(format!("{status}: {text}")));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("a sync payload failed the controller: {e}");
    }
    // Both sides of the parser were reached: accepted reports and refused ones.
    let seen = seen.into_inner();
    eprintln!("sync answers by status: {seen:?}");
    assert!(seen.get(&200).is_some_and(|n| *n > 0) && seen.keys().any(|s| (400..500).contains(s)), "{seen:?}");
    // The host and the cloud still work for honest callers.
    rt.block_on(async {
        let desired = agent.sync(&c, vec![]).await;
        assert_eq!(desired.instances.len(), 1);
        let (s, _) = c.get("/v1/instances", &c.admin).await;
        assert_eq!(s, StatusCode::OK);
    });
}

/// The panel's POST routes, with ids that exist (`{instance}` …) or do not.
const FORM_ROUTES: &[&str] = &[
    "/ui/login",
    "/ui/logout",
    "/ui/instances",
    "/ui/instances/{instance}/action",
    "/ui/instances/{instance}/snapshot",
    "/ui/instances/i-00000000000000000/action",
    "/ui/images/{image}/delete",
    "/ui/volumes",
    "/ui/volumes/vol-00000000000000000/action",
    "/ui/snapshots",
    "/ui/snapshots/snap-00000000000000000/delete",
    "/ui/keypairs",
    "/ui/keypairs/%2e%2e/delete",
    "/ui/networks",
    "/ui/networks/net-00000000000000000/delete",
    "/ui/security-groups",
    "/ui/security-groups/sg-00000000000000000/delete",
    "/ui/security-groups/sg-00000000000000000/rules",
    "/ui/security-groups/sg-00000000000000000/rules/x/delete",
    "/ui/floating-ips",
    "/ui/admin/hosts/h-00000000000000000/disable",
    "/ui/admin/flavors",
    "/ui/admin/flavors/x/delete",
    "/ui/admin/prices",
    "/ui/admin/projects",
    "/ui/admin/users",
    "/ui/admin/quotas",
];

/// Field names the panel's forms use, and some they do not.
const FIELDS: &[&str] = &[
    "name",
    "flavor",
    "image",
    "network",
    "security_group",
    "key_name",
    "user_data",
    "count",
    "action",
    "size_gib",
    "volume",
    "instance",
    "description",
    "cidr",
    "gateway",
    "protocol",
    "port_first",
    "port_last",
    "source",
    "port",
    "address",
    "floating_ip",
    "vcpus",
    "ram_mib",
    "disk_gib",
    "item",
    "unit_price",
    "effective_from",
    "project",
    "username",
    "password",
    "role",
    "instances",
    "volume_gib",
    "public_key",
    "device",
    "csrf",
    "zzz",
];

fn form_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("0".to_owned()),
        Just("mini".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("999.1.1.1/99".to_owned()),
        Just("delete".to_owned()),
        Just("%ZZ".to_owned()),
        Just("a".repeat(5000)),
        ".{0,30}",
    ]
}

#[derive(Debug, Clone)]
enum Form {
    Fields(usize, Vec<(usize, String)>, bool),
    Raw(usize, Vec<u8>),
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        8 => (0..FORM_ROUTES.len(), prop::collection::vec((0..FIELDS.len(), form_value()), 0..8), any::<bool>())
            .prop_map(|(r, f, csrf)| Form::Fields(r, f, csrf)),
        1 => (0..FORM_ROUTES.len(), prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(r, b)| Form::Raw(r, b)),
    ]
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn cookies_of(resp: &axum::response::Response) -> Vec<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect()
}

fn csrf_in(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    body[at..at + body[at..].find('"').unwrap()].to_owned()
}

async fn page(c: &Cloud, path: &str, cookie: &str) -> (StatusCode, Vec<String>, String) {
    let req = Request::builder().uri(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap();
    let resp = c.router.clone().oneshot(req).await.unwrap();
    let (status, cookies) = (resp.status(), cookies_of(&resp));
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, cookies, String::from_utf8_lossy(&bytes).into_owned())
}

/// Logs in through the panel's form as a browser does; returns (cookie header, CSRF token).
async fn panel_session(c: &Cloud) -> (String, String) {
    let (_, pre, body) = page(c, "/ui/login", "").await;
    let login = Request::builder()
        .method(Method::POST)
        .uri("/ui/login")
        .header(header::COOKIE, pre.join("; "))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "username=admin&password={}&csrf={}",
            enc(common::ADMIN_PASSWORD),
            enc(&csrf_in(&body))
        )))
        .unwrap();
    let resp = c.router.clone().oneshot(login).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let mut jar: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for kv in pre.iter().chain(cookies_of(&resp).iter()) {
        if let Some((k, v)) = kv.split_once('=') {
            jar.insert(k.to_owned(), v.to_owned());
        }
    }
    let cookie = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let (status, _, body) = page(c, "/ui/instances/new", &cookie).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (cookie, csrf_in(&body))
}

#[test]
fn panel_form_bodies_never_fail_the_controller() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (c, cookie, csrf, routes) = rt.block_on(async {
        let c = cloud("sqlite", |_| {}).await;
        let agent = FakeAgent::register(&c, "fuzzed", CAPACITY).await;
        let image = c.kernel_image("tiny").await;
        let launched = c.run(&c.admin, "web", "mini").await;
        agent.converge(&c).await;
        let (cookie, csrf) = panel_session(&c).await;
        let instance = launched["id"].as_str().unwrap().to_owned();
        let routes: Vec<String> =
            FORM_ROUTES.iter().map(|r| r.replace("{instance}", &instance).replace("{image}", &image)).collect();
        (c, cookie, csrf, routes)
    });

    // A valid form with the session's CSRF token gets past the check into its handler.
    rt.block_on(async {
        let valid = Request::builder()
            .method(Method::POST)
            .uri("/ui/security-groups")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("name=before-the-fuzz&description=x&csrf={csrf}")))
            .unwrap();
        let (status, body) = send(&c, valid).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "a valid form: {body}");
    });
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let result = runner.run(&form(), |f| {
        let (route, body) = match &f {
            Form::Fields(r, fields, with_csrf) => {
                let mut pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", FIELDS[*k], enc(v))).collect();
                if *with_csrf {
                    pairs.push(format!("csrf={csrf}"));
                }
                (&routes[*r], pairs.join("&").into_bytes())
            }
            Form::Raw(r, bytes) => (&routes[*r], bytes.clone()),
        };
        // Never log the session out: it would only make later cases trivial.
        if route == "/ui/logout" && matches!(f, Form::Fields(_, _, true)) {
            return Ok(());
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri(route.as_str())
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let (status, text) = rt.block_on(send(&c, req));
        *seen.borrow_mut().entry(status.as_u16()).or_default() += 1;
        if status.is_server_error() {
            return Err(TestCaseError::fail(format!("POST {route}: {status}: {}", &text[..text.len().min(400)])));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("a form body failed the controller: {e}");
    }
    // Bad forms were refused (whether a random one also happened to be valid is
    // chance: the suite once drew 986 cases without one; the valid form before
    // the fuzz shows forms reach their handlers), and the session still works.
    let seen = seen.into_inner();
    eprintln!("panel answers by status: {seen:?}");
    assert!(seen.keys().any(|s| (400..500).contains(s)), "{seen:?}");
    rt.block_on(async {
        let page = Request::builder().uri("/ui/").header(header::COOKIE, &cookie).body(Body::empty()).unwrap();
        assert_eq!(send(&c, page).await.0, StatusCode::OK, "the session still works");
    });
}
