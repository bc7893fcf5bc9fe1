//! Templates and assets, compiled into the binary; the SVG chart of the billing page.

use std::sync::LazyLock;

use axum::response::Html;
use serde_json::Value;
use tera::Tera;

use crate::i18n;
use crate::session::Session;

/// The stylesheet.
pub const CSS: &str = include_str!("../static/panel.css");
/// The little script: live state, console refresh, price estimate, confirmations.
pub const JS: &str = include_str!("../static/panel.js");

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

/// Every template's name and source.
const SOURCES: [(&str, &str); 21] = templates![
    "base.html",
    "error.html",
    "login.html",
    "dashboard.html",
    "instances.html",
    "launch.html",
    "instance.html",
    "images.html",
    "volumes.html",
    "snapshots.html",
    "keypairs.html",
    "billing.html",
    "invoice.html",
    "networks.html",
    "security_groups.html",
    "floating_ips.html",
    "admin_hosts.html",
    "admin_flavors.html",
    "admin_prices.html",
    "admin_projects.html",
    "admin_quotas.html",
];

/// Every template, parsed once.
static TERA: LazyLock<Tera> = LazyLock::new(|| {
    let mut tera = Tera::default();
    #[allow(clippy::expect_used)] // The templates are part of the binary; a unit test parses them all.
    tera.add_raw_templates(SOURCES).expect("panel templates parse");
    tera.register_function("tr", i18n::tr_function);
    tera.register_filter("state", i18n::state_filter);
    tera.register_filter("tr_prefix", i18n::prefixed_filter);
    tera
});

/// Renders `name` with `ctx` (a JSON object); a rendering failure becomes a
/// plain error text (it is a bug, caught by the template tests).
pub fn page_html(name: &str, ctx: &Value) -> Html<String> {
    let mut context = tera::Context::new();
    for (key, default) in
        [("nav", Value::from("")), ("error", Value::Null), ("csrf", Value::from("")), ("is_admin", false.into())]
    {
        context.insert(key, &default);
    }
    context.extend(tera::Context::from_value(ctx.clone()).unwrap_or_default());
    let locale = i18n::current();
    context.insert("lang", locale.tag());
    context.insert("t", i18n::catalog(locale));
    let back = i18n::current_path();
    let link = |to: &str| {
        let q = serde_urlencoded::to_string([("to", to), ("back", back.as_str())]).unwrap_or_default();
        // Written into href with `| safe`: the query is URL-encoded, so `&` is its only HTML-special character.
        format!("/ui/lang?{}", q.replace('&', "&amp;"))
    };
    let catalog = i18n::catalog(locale);
    let states: serde_json::Map<String, Value> = catalog
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("state_").map(|s| (s.to_owned(), Value::from(v.clone()))))
        .collect();
    let js =
        serde_json::json!({"states": states, "price": catalog.get("js_price"), "price_na": catalog.get("js_price_na")});
    context.insert("js_messages", &js.to_string());
    context.insert("lang_links", &serde_json::json!({"en": link("en"), "ja": link("ja")}));
    match TERA.render(name, &context) {
        Ok(html) => Html(html),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            tracing::error!(template = name, error = %msg, "panel template failed");
            Html(format!(
                "<!doctype html><title>Error</title><p>template {name} failed: {}</p>",
                tera::escape_html(&msg)
            ))
        }
    }
}

/// Renders a page of a logged-in session: adds the session's CSRF token,
/// role and the active menu entry to `ctx`.
pub fn page(name: &str, nav: &str, session: &Session, mut ctx: Value) -> Html<String> {
    if let Value::Object(map) = &mut ctx {
        map.insert("csrf".into(), session.csrf.clone().into());
        map.insert("is_admin".into(), session.is_admin().into());
        map.insert("role".into(), session.claims.role.clone().into());
        map.insert("project_id".into(), session.claims.prj.clone().into());
        map.insert("nav".into(), nav.into());
    }
    page_html(name, &ctx)
}

/// One bar of the usage chart.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Label (resource and item).
    pub label: String,
    /// Amount as a number, for the length.
    pub value: f64,
    /// Amount as the API wrote it, for the text.
    pub text: String,
}

/// A horizontal bar chart as inline SVG (labels escaped).
pub fn bar_chart(bars: &[Bar]) -> String {
    const ROW: usize = 24;
    const COLOR: &str = "#3b7dd8";
    const LABEL_W: f64 = 260.0;
    const BAR_W: f64 = 320.0;
    if bars.is_empty() {
        return String::new();
    }
    let max = bars.iter().map(|b| b.value).fold(0.0_f64, f64::max);
    let height = bars.len() * ROW + 8;
    let mut svg = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" role="img" aria-label="usage by resource">"#,
        w = LABEL_W + BAR_W + 120.0
    );
    for (i, b) in bars.iter().enumerate() {
        let y = i * ROW + 4;
        let len = if max > 0.0 { (b.value / max * BAR_W).max(1.0) } else { 1.0 };
        svg.push_str(&format!(
            r##"<text x="0" y="{ty}" font-size="12">{label}</text><rect x="{LABEL_W}" y="{y}" width="{len:.1}" height="{h}" fill="{COLOR}"/><text x="{tx:.1}" y="{ty}" font-size="12">{text}</text>"##,
            ty = y + 14,
            label = tera::escape_html(&b.label),
            h = ROW - 6,
            tx = LABEL_W + len + 6.0,
            text = tera::escape_html(&b.text),
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_the_error_page_escapes() {
        let html =
            page_html("error.html", &serde_json::json!({"status": 403, "title": "Forbidden", "message": "<b>no</b>"}));
        assert!(html.0.contains("&lt;b&gt;no&lt;&#x2F;b&gt;"), "{}", html.0);
        assert!(html.0.contains("403"));
    }

    /// A context that enters every loop and branch of the templates.
    fn full_context() -> Value {
        let mut ctx = serde_json::json!({
            "csrf": "tok", "nav": "admin", "is_admin": true, "role": "admin", "project_id": "prj-1",
            "status": 404, "title": "Not Found", "message": "m", "username": "u",
            "total_instances": 1, "by_state": {"running": 1, "error": 2}, "forecast": "1.00",
            "usage": {"resources": [], "month": "2026-11", "total": "1.00", "currency": "JPY", "closed_until": "2026-11-01T00:00:00Z", "lines": []},
            "quotas": {"quotas": [{"resource": "instances", "in_use": 1, "limit": -1, "overridden": false}, {"resource": "vcpus", "in_use": 1, "limit": 8, "overridden": true}]},
            "instances": [{"id": "i-1", "name": "web", "state": "running", "flavor": "small", "created_at": "t"}],
            "i": {"id": "i-1", "name": "web", "state": "stopped", "desired": "running", "flavor": "small", "vcpus": 1,
                  "memory_mib": 512, "disk_gib": 1, "image_id": "ami-1", "created_at": "t",
                  "addresses": [{"ip": "10.0.0.2", "network": "default", "floating_ip": "192.0.2.1", "mac": "m", "security_groups": ["default"]}]},
            "volumes": [{"id": "vol-1", "name": "v", "size_gib": 1, "backend": "file", "state": "in-use", "attached_to": "i-1"},
                        {"id": "vol-2", "name": "w", "size_gib": 1, "backend": "file", "state": "available"}],
            "events": [{"at": "t", "actor": "a", "action": "x", "detail": {}}],
            "console": "c",
            "flavors": [{"id": "flv-1", "name": "small", "vcpus": 1, "memory_mib": 512, "disk_gib": 1}],
            "images": [{"id": "ami-1", "name": "img", "kind": "disk", "visibility": "public", "state": "active", "files": [{"role": "disk", "size_bytes": 1}], "created_at": "t", "owner_project_id": "prj-1"}],
            "keypairs": [{"name": "k"}],
            "networks": [{"id": "net-1", "name": "n", "cidr": "10.0.0.0/24"}],
            "groups": [{"id": "sg-1", "name": "default", "default": true, "description": "d", "port_count": 1,
                        "rules": [{"id": "sgr-1", "direction": "ingress", "protocol": "tcp", "ports": {"first": 22, "last": 22}, "cidr": "0.0.0.0/0"},
                                  {"id": "sgr-2", "direction": "egress", "protocol": "any", "ports": null, "cidr": "0.0.0.0/0"}]}],
            "input": {"networks": [], "security_groups": []},
        });
        let more = serde_json::json!({
            "graphs": "<svg></svg>", "range": "hour", "ranges": ["hour", "day"],
            "fips": [], "hosts": [], "projects": [], "snapshots": [], "users": [], "months": [], "chart": "",
            "prices": {"currency": "JPY", "items": [], "prices": []},
            "selected": "prj-1", "defaults": [{"resource": "instances", "limit": 10}], "invoice": {"tax_rate_percent": "10", "month": "2026-10", "status": "closed", "lines": [], "subtotal": "0", "tax": "0", "total": "0", "currency": "JPY"},
        });
        if let (Value::Object(c), Value::Object(m)) = (&mut ctx, more) {
            c.extend(m);
        }
        ctx
    }

    #[test]
    fn every_template_renders_in_every_locale_with_known_keys() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut failed = Vec::new();
        for (name, _) in SOURCES.iter().filter(|(n, _)| *n != "base.html") {
            for locale in [i18n::Locale::En, i18n::Locale::Ja] {
                let mut ctx = full_context();
                if !["launch.html", "dashboard.html", "instance.html", "security_groups.html"].contains(name) {
                    // Pages not translated beyond their chrome: their lists empty.
                    for list in ["networks", "groups", "keypairs"] {
                        ctx[list] = serde_json::json!([]);
                    }
                }
                let html = rt.block_on(i18n::scope(locale, async { page_html(name, &ctx).0 }));
                if html.contains("failed:") || !html.contains(&format!("<html lang=\"{}\">", locale.tag())) {
                    failed.push(html);
                }
            }
        }
        assert!(failed.is_empty(), "{failed:#?}");
        // Templates name only keys of the English catalog.
        let key = regex_lite_keys();
        let mut seen = 0;
        for (name, text) in SOURCES {
            for k in key(text) {
                assert!(i18n::english().contains_key(&k), "{name} uses unknown message key {k}");
                seen += 1;
            }
        }
        assert!(seen > 100, "the key scanner found only {seen} keys");
        assert_eq!(
            key(r#"{{ t.nav_admin }} {{ tr(key="dash_limit", n=1) }} {{ tr(key="confirm_" ~ a) }}"#),
            ["nav_admin", "dash_limit"]
        );
    }

    /// The message keys a template names literally (`t.key`, `tr(key="key"`).
    fn regex_lite_keys() -> impl Fn(&str) -> Vec<String> {
        |text: &str| {
            let mut out = Vec::new();
            for (marker, ends) in [("t.", &[' ', '|', '}'][..]), ("key=\"", &['"'][..])] {
                let mut rest = text;
                while let Some(at) = rest.find(marker) {
                    let before = &text[..text.len() - rest.len() + at];
                    rest = &rest[at + marker.len()..];
                    if marker == "t." && !(before.ends_with("{{ ") || before.ends_with('(')) {
                        continue;
                    }
                    let end = rest.find(|c: char| ends.contains(&c)).unwrap_or(rest.len());
                    let k = &rest[..end];
                    if !rest[end..].trim_start_matches('"').trim_start().starts_with('~') {
                        out.push(k.to_owned());
                    }
                }
            }
            out
        }
    }

    #[test]
    fn japanese_pages_are_japanese_and_english_stays_english() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let ja = rt.block_on(i18n::scope(i18n::Locale::Ja, async { page_html("instance.html", &full_context()).0 }));
        for s in ["インスタンス", "停止", "実行中", "インスタンス web を削除しますか?", "コンソール", "日本語</strong>"]
        {
            assert!(ja.contains(s), "{s} missing: {ja}");
        }
        let en = page_html("instance.html", &full_context()).0;
        for s in
            [">Stop</button>", "Delete instance web?", ">stopped</span>", "<h2>Console</h2>", "<strong>EN</strong>"]
        {
            assert!(en.contains(s), "{s} missing: {en}");
        }
    }

    #[test]
    fn chart_scales_bars_and_escapes_labels() {
        let svg = bar_chart(&[
            Bar { label: "i-1 <x>".into(), value: 10.0, text: "10".into() },
            Bar { label: "vol-2".into(), value: 5.0, text: "5".into() },
        ]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(r#"width="320.0""#));
        assert!(svg.contains(r#"width="160.0""#));
        assert!(svg.contains("i-1 &lt;x&gt;"));
        assert!(bar_chart(&[]).is_empty());
    }
}
