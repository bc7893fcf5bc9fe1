//! The control panel through the whole controller router, as a browser without
//! JavaScript would drive it: cookies, forms, CSRF tokens, redirects. The
//! real-browser test is `tests/tests/e2e/panel.rs`.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

/// A cookie jar and the last CSRF token seen in a page.
#[derive(Default)]
struct Browser {
    cookies: HashMap<String, String>,
    csrf: String,
    forwarded_https: bool,
    accept_language: Option<String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    set_cookies: Vec<String>,
    content_type: String,
    disposition: Option<String>,
    body: String,
}

impl Browser {
    async fn request(&mut self, c: &Cloud, method: Method, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut req = Request::builder().method(method).uri(path);
        let cookie: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !cookie.is_empty() {
            req = req.header(header::COOKIE, cookie.join("; "));
        }
        if self.forwarded_https {
            req = req.header("x-forwarded-proto", "https");
        }
        if let Some(l) = &self.accept_language {
            req = req.header(header::ACCEPT_LANGUAGE, l);
        }
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(serde_urlencoded_pairs(f))
            }
            None => Body::empty(),
        };
        let resp = c.router.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let h = resp.headers().clone();
        let set_cookies: Vec<String> =
            h.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for sc in &set_cookies {
            let (kv, attrs) = sc.split_once(';').unwrap_or((sc, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(i) = body.find("name=\"csrf\" value=\"") {
            let rest = &body[i + 19..];
            self.csrf = rest[..rest.find('"').unwrap()].to_owned();
        }
        Page {
            status,
            location: h.get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned()),
            set_cookies,
            content_type: h.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default(),
            disposition: h.get(header::CONTENT_DISPOSITION).map(|v| v.to_str().unwrap().to_owned()),
            body,
        }
    }

    async fn get(&mut self, c: &Cloud, path: &str) -> Page {
        self.request(c, Method::GET, path, None).await
    }

    /// Posts a form with this session's CSRF token added.
    async fn post(&mut self, c: &Cloud, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut all = fields.to_vec();
        all.push(("csrf", &csrf));
        self.request(c, Method::POST, path, Some(&all)).await
    }

    async fn login(c: &Cloud, user: &str, password: &str) -> Self {
        let mut b = Browser::default();
        let p = b.get(c, "/ui/login").await;
        assert_eq!(p.status, StatusCode::OK);
        let p = b.post(c, "/ui/login", &[("username", user), ("password", password)]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
        assert_eq!(p.location.as_deref(), Some("/ui/"));
        let p = b.get(c, "/ui/").await;
        assert_eq!(p.status, StatusCode::OK, "{:?} {:?} {}", p.location, b.cookies, p.body);
        b
    }
}

fn serde_urlencoded_pairs(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(k, v)| format!("{}={}", kumo_web_ui_enc(k), kumo_web_ui_enc(v))).collect::<Vec<_>>().join("&")
}

fn kumo_web_ui_enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn instance_count(c: &Cloud, token: &str) -> usize {
    let (_, b) = c.get("/v1/instances", token).await;
    b["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn root_redirects_browsers_but_not_api_actions() {
    let c = cloud("sqlite", |_| {}).await;
    let mut b = Browser::default();
    let p = b.get(&c, "/").await;
    assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/ui/")));
    // An unsigned EC2 action is the EC2 API's to refuse, never a redirect.
    let p = b.get(&c, "/?Action=DescribeInstances&Version=2016-11-15").await;
    assert_eq!((p.status, p.location), (StatusCode::UNAUTHORIZED, None));
    let p = b.get(&c, "/ui").await;
    assert_eq!(p.location.as_deref(), Some("/ui/"));
    // No session: every page sends the browser to the login form.
    for path in ["/ui/", "/ui/instances", "/ui/admin/hosts", "/ui/instances.json"] {
        let p = b.get(&c, path).await;
        assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/ui/login")), "{path}");
    }
    let p = b.get(&c, "/ui/no-such-page").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let css = b.get(&c, "/ui/static/panel.css").await;
    assert_eq!((css.status, css.content_type.as_str()), (StatusCode::OK, "text/css"));
}

#[tokio::test]
async fn login_sets_a_strict_session_cookie_and_logout_clears_it() {
    let c = cloud("sqlite", |_| {}).await;
    let mut b = Browser::default();
    b.get(&c, "/ui/login").await;
    // Wrong password: the API's message, the user name kept, no session.
    let p = b.post(&c, "/ui/login", &[("username", "admin"), ("password", "wrong-password")]).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("wrong user name or password"), "{}", p.body);
    assert!(p.body.contains(r#"value="admin""#));
    assert!(!b.cookies.contains_key("kumo_session"));
    // A login form without the double-submit cookie's token is refused.
    let mut stranger = Browser::default();
    let p = stranger
        .request(
            &c,
            Method::POST,
            "/ui/login",
            Some(&[("username", "admin"), ("password", common::ADMIN_PASSWORD), ("csrf", "x")]),
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(stranger.cookies.is_empty());

    b.forwarded_https = true;
    b.get(&c, "/ui/login").await;
    let p = b.post(&c, "/ui/login", &[("username", "admin"), ("password", common::ADMIN_PASSWORD)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let session = p.set_cookies.iter().find(|s| s.starts_with("kumo_session=")).unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict") && session.contains("Secure"),
        "{session}"
    );
    let max_age: i64 = session.split("Max-Age=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert!(max_age > 600, "{session}");
    let p = b.get(&c, "/ui/").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("Dashboard") && p.body.contains("Admin"));

    // Logging out without the token does nothing; with it, the cookie goes.
    let p = b.request(&c, Method::POST, "/ui/logout", Some(&[])).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(b.cookies.contains_key("kumo_session"));
    let token = b.cookies["kumo_session"].clone();
    assert_eq!(c.get("/v1/instances", &token).await.0, StatusCode::OK);
    let p = b.post(&c, "/ui/logout", &[]).await;
    assert_eq!(p.location.as_deref(), Some("/ui/login"));
    assert!(!b.cookies.contains_key("kumo_session"));
    assert_eq!(b.get(&c, "/ui/").await.location.as_deref(), Some("/ui/login"));
    // Issue 12: logout revokes the token, so a stolen copy of the cookie is worthless.
    let (s, body) = c.get("/v1/instances", &token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["message"].as_str().unwrap().contains("revoked"), "{body}");
}

#[tokio::test]
async fn expired_or_rejected_tokens_go_back_to_login() {
    use base64::Engine;
    let c = cloud("sqlite", |_| {}).await;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    // Expired by its own claim.
    let mut b = Browser::default();
    let claims = r#"{"sub":"usr-0","prj":"prj-0","role":"admin","iat":1,"exp":2}"#;
    b.cookies.insert("kumo_session".into(), format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(claims)));
    let p = b.get(&c, "/ui/instances").await;
    assert_eq!(p.location.as_deref(), Some("/ui/login?expired=1"));
    assert!(!b.cookies.contains_key("kumo_session"));
    let p = b.get(&c, "/ui/login?expired=1").await;
    assert!(p.body.contains("session expired"), "{}", p.body);
    // Unexpired claim but a signature the API rejects: the API's 401 logs out.
    let claims = r#"{"sub":"usr-0","prj":"prj-0","role":"admin","iat":1,"exp":99999999999}"#;
    b.cookies.insert("kumo_session".into(), format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(claims)));
    let p = b.get(&c, "/ui/admin/hosts").await;
    assert_eq!(p.location.as_deref(), Some("/ui/login?expired=1"));
}

#[tokio::test]
async fn every_page_renders_for_an_admin() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let image = c.kernel_image("tiny").await;
        let inst = c.run(&c.admin, "web-1", "mini").await;
        let id = inst["id"].as_str().unwrap().to_owned();
        agent.converge(&c).await;
        let mut b = Browser::login(&c, "admin", common::ADMIN_PASSWORD).await;
        let month = kumo_wire::Timestamp::now().to_string()[..7].to_owned();
        for (path, needle) in [
            ("/ui/", "Forecast for the month"),
            ("/ui/instances", "web-1"),
            ("/ui/instances/new", "tiny"),
            (&format!("/ui/instances/{id}") as &str, "Console"),
            (&format!("/ui/instances/{id}/live.json"), "\"state\""),
            ("/ui/instances.json", &id),
            ("/ui/estimate.json?flavor=mini&hours=720", "\"total\""),
            ("/ui/images", &image),
            ("/ui/volumes", "Create volume"),
            ("/ui/snapshots", "Snapshot volume"),
            ("/ui/keypairs", "Create key pair"),
            ("/ui/networks", "Create network"),
            ("/ui/security-groups", "default"),
            ("/ui/floating-ips", "Allocate floating IP"),
            ("/ui/billing", "Invoices"),
            (&format!("/ui/billing/invoices/{month}"), "Subtotal"),
            ("/ui/admin/hosts", "host-a"),
            ("/ui/admin/flavors", "mini"),
            ("/ui/admin/prices", "flavor:mini"),
            ("/ui/admin/projects", "admin"),
            ("/ui/admin/quotas", "instances"),
        ] {
            let p = b.get(&c, path).await;
            assert_eq!(p.status, StatusCode::OK, "{backend} {path}: {}", p.body);
            assert!(p.body.contains(needle), "{backend} {path} lacks {needle}: {}", p.body);
            assert!(!p.body.contains("template"), "{backend} {path}: {}", p.body);
        }
        let csv = b.get(&c, &format!("/ui/billing/invoices/{month}/csv")).await;
        assert_eq!(csv.status, StatusCode::OK);
        assert!(csv.content_type.starts_with("text/csv"), "{}", csv.content_type);
        assert!(csv.disposition.unwrap().contains(&format!("invoice-{month}.csv")));
    }
}

#[tokio::test]
async fn forms_without_their_csrf_token_change_nothing() {
    let c = cloud("sqlite", |_| {}).await;
    let _agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
    c.kernel_image("tiny").await;
    let mut b = Browser::login(&c, "admin", common::ADMIN_PASSWORD).await;
    let fields = [("name", "web-x"), ("flavor", "mini"), ("count", "1")];
    // Missing token.
    let p = b.request(&c, Method::POST, "/ui/instances", Some(&fields)).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(p.body.contains("CSRF"), "{}", p.body);
    // Another session's token.
    c.tenant("acme").await;
    let other = Browser::login(&c, "acme-user", "password-123").await;
    let mut with_other = fields.to_vec();
    with_other.push(("csrf", &other.csrf));
    let p = b.request(&c, Method::POST, "/ui/instances", Some(&with_other)).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(instance_count(&c, &c.admin).await, 0);
    let p = b
        .request(
            &c,
            Method::POST,
            "/ui/admin/flavors",
            Some(&[("name", "huge"), ("vcpus", "8"), ("memory_mib", "8192"), ("disk_gib", "8")]),
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let (_, flavors) = c.get("/v1/flavors", &c.admin).await;
    assert!(!flavors.to_string().contains("huge"));
    // With it, the same form works.
    let p = b.post(&c, "/ui/instances", &fields).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(p.location.unwrap().starts_with("/ui/instances/i-"));
    assert_eq!(instance_count(&c, &c.admin).await, 1);
}

#[tokio::test]
async fn refused_launch_shows_the_api_message_and_keeps_the_input() {
    let c = cloud("sqlite", |_| {}).await;
    let _agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
    c.kernel_image("tiny").await;
    let mut b = Browser::login(&c, "admin", common::ADMIN_PASSWORD).await;
    b.get(&c, "/ui/instances/new").await;
    let p = b
        .post(
            &c,
            "/ui/instances",
            &[("name", "Bad_Name!"), ("flavor", "small"), ("user_data", "#!/bin/sh\necho kept"), ("count", "1")],
        )
        .await;
    let (status, direct) = c.post("/v1/instances", &c.admin, json!({"name": "Bad_Name!", "flavor": "small"})).await;
    assert_eq!(p.status, status, "the page has the API's status");
    assert!(status.is_client_error());
    let message = direct["message"].as_str().unwrap();
    assert!(p.body.contains(&tera_escape(message)), "page lacks the API's '{message}': {}", p.body);
    assert!(p.body.contains(r#"value="Bad_Name!""#), "{}", p.body);
    assert!(p.body.contains(r#"<option value="small" selected>"#), "{}", p.body);
    assert!(p.body.contains("echo kept"));
    let p = b.post(&c, "/ui/instances", &[("name", "ok-name"), ("flavor", "mini"), ("count", "many")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("count must be a whole number"));
    assert_eq!(instance_count(&c, &c.admin).await, 0);
}

fn tera_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2F;")
}

#[tokio::test]
async fn members_cannot_open_admin_pages_or_other_projects_instances() {
    let c = cloud("sqlite", |_| {}).await;
    let _agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
    c.kernel_image("tiny").await;
    let admin_instance = c.run(&c.admin, "admins-vm", "mini").await;
    let admin_id = admin_instance["id"].as_str().unwrap();
    c.tenant("acme").await;
    let mut m = Browser::login(&c, "acme-user", "password-123").await;
    let p = m.get(&c, "/ui/").await;
    assert!(!p.body.contains("/ui/admin/hosts"), "members see no admin menu");
    for path in ["/ui/admin/hosts", "/ui/admin/flavors", "/ui/admin/prices", "/ui/admin/projects", "/ui/admin/quotas"] {
        let p = m.get(&c, path).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{path}");
    }
    let p = m.post(&c, "/ui/admin/projects", &[("name", "sneaky")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let (_, projects) = c.get("/v1/projects", &c.admin).await;
    assert!(!projects.to_string().contains("sneaky"));
    let p = m.get(&c, &format!("/ui/instances/{admin_id}")).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);
    assert!(!p.body.contains("admins-vm"));
    let p = m.post(&c, &format!("/ui/instances/{admin_id}/action"), &[("action", "stop")]).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let p = m.get(&c, "/ui/instances").await;
    assert!(!p.body.contains("admins-vm"));
}

#[tokio::test]
async fn a_generated_private_key_is_downloaded_once() {
    let c = cloud("sqlite", |_| {}).await;
    let mut b = Browser::login(&c, "admin", common::ADMIN_PASSWORD).await;
    b.get(&c, "/ui/keypairs").await;
    let p = b.post(&c, "/ui/keypairs", &[("name", "laptop"), ("public_key", "")]).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(p.disposition.as_deref(), Some("attachment; filename=\"laptop.pem\""));
    assert!(p.body.contains("BEGIN OPENSSH PRIVATE KEY"));
    let key_body = p.body.lines().nth(1).unwrap().to_owned();
    let list = b.get(&c, "/ui/keypairs").await;
    assert!(list.body.contains("laptop"));
    assert!(!list.body.contains("PRIVATE KEY") && !list.body.contains(&key_body));
    // Same name again: the API's conflict next to the form.
    let p = b.post(&c, "/ui/keypairs", &[("name", "laptop")]).await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    assert!(p.body.contains("class=\"error\""));
}

#[tokio::test]
async fn networks_groups_and_rules_through_forms() {
    let c = cloud("sqlite", |_| {}).await;
    let _agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
    c.kernel_image("tiny").await;
    let mut b = Browser::login(&c, "admin", common::ADMIN_PASSWORD).await;
    b.get(&c, "/ui/networks").await;
    let p = b.post(&c, "/ui/networks", &[("name", "back"), ("cidr", "10.9.0.0/24"), ("dns_servers", "")]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    // An overlapping subnet: the API's message, the input kept.
    let p = b.post(&c, "/ui/networks", &[("name", "back2"), ("cidr", "10.9.0.128/25")]).await;
    assert!(p.status.is_client_error(), "{}", p.body);
    assert!(p.body.contains("class=\"error\"") && p.body.contains(r#"value="10.9.0.128&#x2F;25""#), "{}", p.body);

    let p = b.post(&c, "/ui/security-groups", &[("name", "web"), ("description", "http in")]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let (_, groups) = c.get("/v1/security-groups", &c.admin).await;
    let web = groups["items"].as_array().unwrap().iter().find(|g| g["name"] == "web").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = b
        .post(
            &c,
            &format!("/ui/security-groups/{web}/rules"),
            &[("protocol", "tcp"), ("ports", "ssh"), ("cidr", "0.0.0.0/0")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("ports must be a port or a range") && p.body.contains(r#"value="ssh""#), "{}", p.body);
    let p = b
        .post(
            &c,
            &format!("/ui/security-groups/{web}/rules"),
            &[("protocol", "tcp"), ("ports", "80-81"), ("cidr", "0.0.0.0/0")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = b.get(&c, "/ui/security-groups").await;
    assert!(p.body.contains("80-81") && p.body.contains("0.0.0.0&#x2F;0"), "{}", p.body);

    // Launch on the new network in the new group.
    b.get(&c, "/ui/instances/new").await;
    let p = b
        .post(
            &c,
            "/ui/instances",
            &[("name", "netvm"), ("flavor", "mini"), ("networks", "back"), ("security_groups", "web"), ("count", "1")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = b.get(&c, p.location.as_deref().unwrap()).await;
    assert!(page.body.contains("10.9.0.") && page.body.contains(" on back"), "{}", page.body);
    // A refused launch keeps the ticked boxes.
    let p = b
        .post(
            &c,
            "/ui/instances",
            &[("name", "netvm-"), ("flavor", "mini"), ("networks", "back"), ("security_groups", "web"), ("count", "1")],
        )
        .await;
    assert!(p.status.is_client_error(), "{}", p.body);
    assert!(p.body.contains(r#"value="back" checked"#) && p.body.contains(r#"value="web" checked"#), "{}", p.body);
}

#[tokio::test]
async fn japanese_by_accept_language_english_by_cookie_and_the_switch() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        c.kernel_image("tiny").await;
        c.run(&c.admin, "web-1", "mini").await;
        agent.converge(&c).await;

        // A Japanese browser gets Japanese from the login form on.
        let mut b = Browser { accept_language: Some("ja,en-US;q=0.8".into()), ..Browser::default() };
        let p = b.get(&c, "/ui/login").await;
        assert!(p.body.contains(r#"<html lang="ja">"#), "{backend}: {}", p.body);
        assert!(p.body.contains("<h1>ログイン</h1>") && p.body.contains("パスワード"), "{backend}: {}", p.body);
        let p = b.post(&c, "/ui/login", &[("username", "admin"), ("password", common::ADMIN_PASSWORD)]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
        let p = b.get(&c, "/ui/").await;
        assert!(p.body.contains(r#"<html lang="ja">"#), "{backend}: {}", p.body);
        for s in [
            "<h1>ダッシュボード</h1>",
            "今月の予測:",
            "<th>上限</th>",
            ">ログアウト</button>",
            "<strong>日本語</strong>",
        ] {
            assert!(p.body.contains(s), "{backend}: dashboard lacks {s}: {}", p.body);
        }
        let p = b.get(&c, "/ui/instances").await;
        for s in ["<h1>インスタンス</h1>", "<th>名前</th><th>ID</th><th>状態</th>", "インスタンスを起動"]
        {
            assert!(p.body.contains(s), "{backend}: instances lacks {s}: {}", p.body);
        }
        // The state in Japanese (which one depends on how far the fake agent got).
        let (state_en, state_ja) = [("running", "実行中"), ("pending", "保留中"), ("building", "構築中")]
            .into_iter()
            .find(|(en, _)| p.body.contains(&format!(r#"data-state="{en}""#)))
            .unwrap();
        assert!(p.body.contains(&format!(r#"data-state="{state_en}" title="">{state_ja}</span>"#)), "{}", p.body);
        // The switch back to English points here, and sets the cookie.
        let link = r#"href="/ui/lang?to=en&amp;back=%2Fui%2Finstances""#;
        assert!(p.body.contains(link), "{backend}: {}", p.body);
        let p = b.get(&c, "/ui/lang?to=en&back=%2Fui%2Finstances").await;
        assert_eq!(p.status, StatusCode::SEE_OTHER);
        assert_eq!(p.location.as_deref(), Some("/ui/instances"));
        assert!(
            p.set_cookies.iter().any(|c| c.starts_with("lang=en;") && c.contains("Path=/ui")),
            "{:?}",
            p.set_cookies
        );
        // The cookie wins over Accept-Language.
        let p = b.get(&c, "/ui/instances").await;
        assert!(
            p.body.contains(r#"<html lang="en">"#) && p.body.contains("<h1>Instances</h1>"),
            "{backend}: {}",
            p.body
        );
        let english_state = format!(r#"data-state="{state_en}" title="">{state_en}</span>"#);
        assert!(p.body.contains(&english_state) && !p.body.contains(state_ja), "{backend}: {}", p.body);
        let p = b.get(&c, "/ui/").await;
        assert!(p.body.contains("<h1>Dashboard</h1>") && p.body.contains("Forecast for the month"), "{}", p.body);
        // And back to Japanese by the switch.
        let p = b.get(&c, "/ui/lang?to=ja&back=/ui/").await;
        assert_eq!(p.location.as_deref(), Some("/ui/"));
        assert!(b.get(&c, "/ui/").await.body.contains("<h1>ダッシュボード</h1>"));

        // Off-site or unknown targets are refused and set nothing.
        for bad in [
            "/ui/lang?to=en&back=https://evil.example/ui/",
            "/ui/lang?to=en&back=//evil.example/ui/",
            "/ui/lang?to=en&back=/v1/instances",
            "/ui/lang?to=fr&back=/ui/",
        ] {
            let p = b.get(&c, bad).await;
            assert_eq!(p.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(p.location.is_none() && p.set_cookies.is_empty(), "{bad}: {:?}", p.set_cookies);
        }
        assert_eq!(b.cookies.get("lang").map(String::as_str), Some("ja"));

        // A browser with neither gets English; the panel's own messages follow the locale.
        let mut en = Browser::default();
        assert!(en.get(&c, "/ui/login").await.body.contains(r#"<html lang="en">"#));
        let mut ja = Browser { accept_language: Some("ja".into()), ..Browser::default() };
        let p = ja.get(&c, "/ui/login?expired=1").await;
        assert!(p.body.contains("セッションの有効期限が切れました"), "{}", p.body);
        let p = ja.get(&c, "/ui/no-such-page").await;
        assert_eq!(p.status, StatusCode::NOT_FOUND);
        assert!(
            p.body.contains("<h1>404 見つかりません</h1>") && p.body.contains("ページが見つかりません"),
            "{}",
            p.body
        );
        let p = en.get(&c, "/ui/no-such-page").await;
        assert!(p.body.contains("<h1>404 Not Found</h1>") && p.body.contains("no such page"), "{}", p.body);
    }
}

/// Regression (issue 20): the dashboard counted deleted instances (11 deleted of 14).
#[tokio::test]
async fn the_dashboard_counts_no_deleted_instances() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        c.kernel_image("tiny").await;
        c.run(&c.admin, "kept", "mini").await;
        let gone = c.run(&c.admin, "gone", "mini").await["id"].as_str().unwrap().to_owned();
        agent.converge(&c).await;
        c.delete(&format!("/v1/instances/{gone}"), &c.admin).await;
        agent.converge(&c).await;
        c.wait_state(&c.admin, &gone, "deleted").await;

        let mut b = Browser::login(&c, "admin", common::ADMIN_PASSWORD).await;
        let p = b.get(&c, "/ui/").await;
        assert!(p.body.contains(r#"<p class="big">1</p>"#), "{backend}: {}", p.body);
        assert!(!p.body.contains("state-deleted"), "{backend}: {}", p.body);
        let list = b.get(&c, "/ui/instances").await;
        assert!(!list.body.contains(&gone), "{backend}: the list hides it too");
    }
}

/// Issue 19: whatever one replica issued, every replica accepts: the API's
/// bearer tokens, the panel's session cookie and CSRF token (a form posted
/// to the other replica), and EC2 signatures with an access key made on the
/// first (its secret sealed with the shared key file).
#[tokio::test]
async fn tokens_sessions_csrf_and_ec2_signatures_are_accepted_by_every_replica() {
    for backend in common::backends() {
        let a = cloud(backend, |_| {}).await;
        let b = common::cloud_on(common::replica_dir(&a), a.db_url.clone(), |_| {}).await;
        let t = a.tenant("acme").await;
        let (s, page) = b.get("/v1/instances", &t).await;
        assert_eq!(s, StatusCode::OK, "{backend}: a token from A at B: {page}");

        let mut browser = Browser::login(&a, "acme-user", "password-123").await;
        let p = browser.get(&b, "/ui/security-groups").await;
        assert_eq!(p.status, StatusCode::OK, "{backend}: A's session at B: {:?} {}", p.location, p.body);
        let p = browser.post(&b, "/ui/security-groups", &[("name", "made-at-b"), ("description", "x")]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{backend}: A's CSRF token at B: {}", p.body);
        let (_, groups) = a.get("/v1/security-groups", &t).await;
        assert!(groups["items"].as_array().unwrap().iter().any(|g| g["name"] == "made-at-b"), "{groups}");

        let at_a = crate::ec2::Ec2::new(&a, &t).await;
        let at_b = at_a.through(&b);
        let xml = at_b.ok(&[("Action", "DescribeSecurityGroups")]).await;
        assert!(xml.contains("made-at-b"), "{backend}: A's access key signing at B: {xml}");
    }
}
