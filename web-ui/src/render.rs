//! Templates and assets, compiled into the binary; the SVG chart of the billing page.

use std::sync::LazyLock;

use axum::response::Html;
use serde_json::Value;
use tera::Tera;

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

/// Every template, parsed once.
static TERA: LazyLock<Tera> = LazyLock::new(|| {
    let mut tera = Tera::default();
    #[allow(clippy::expect_used)] // The templates are part of the binary; a unit test parses them all.
    tera.add_raw_templates(templates![
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
    ])
    .expect("panel templates parse");
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
