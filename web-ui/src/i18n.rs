//! The panel's languages: one message catalog per locale (`locales/*.toml`,
//! embedded), the request's locale (the `lang` cookie, else `Accept-Language`,
//! else English) kept in a task-local while the handler runs, and the tera
//! helpers templates use (`t` map, `tr` function, `state` filter).

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::session::{cookie, over_tls};

/// Name of the cookie holding the chosen locale.
pub const LANG_COOKIE: &str = "lang";

/// A language of the panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    /// English (the default and the fallback of every missing message).
    En,
    /// Japanese.
    Ja,
}

impl Locale {
    /// The BCP 47 tag (`<html lang>`, the cookie's value).
    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Ja => "ja",
        }
    }

    /// A locale from a tag such as `ja`, `ja-JP`, `en-US`.
    pub fn parse(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Self::En),
            "ja" => Some(Self::Ja),
            _ => None,
        }
    }

    /// The request's locale: the `lang` cookie, else the first supported
    /// language of `Accept-Language` by preference, else English.
    pub fn of(headers: &HeaderMap) -> Self {
        if let Some(l) = cookie(headers, LANG_COOKIE).as_deref().and_then(Self::parse) {
            return l;
        }
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mut best: Option<(f32, usize, Self)> = None;
        for (pos, item) in accept.split(',').enumerate() {
            let mut parts = item.split(';');
            let Some(l) = parts.next().and_then(Self::parse) else { continue };
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if q > 0.0 && best.is_none_or(|(bq, _, _)| q > bq) {
                best = Some((q, pos, l));
            }
        }
        best.map_or(Self::En, |(_, _, l)| l)
    }
}

fn parse_catalog(name: &str, text: &str) -> BTreeMap<String, String> {
    // Embedded in the binary; the unit tests parse both.
    toml::from_str(text).unwrap_or_else(|e| panic!("locale catalog {name}: {e}"))
}

static EN: LazyLock<BTreeMap<String, String>> =
    LazyLock::new(|| parse_catalog("en.toml", include_str!("../locales/en.toml")));
static JA: LazyLock<BTreeMap<String, String>> =
    LazyLock::new(|| parse_catalog("ja.toml", include_str!("../locales/ja.toml")));
/// Japanese with English for what it lacks.
static JA_FULL: LazyLock<BTreeMap<String, String>> = LazyLock::new(|| {
    let mut m = EN.clone();
    m.extend(JA.iter().map(|(k, v)| (k.clone(), v.clone())));
    m
});

/// The full catalog of `locale` (missing Japanese messages are English).
pub fn catalog(locale: Locale) -> &'static BTreeMap<String, String> {
    match locale {
        Locale::En => &EN,
        Locale::Ja => &JA_FULL,
    }
}

/// The English catalog alone (for tests of completeness).
pub fn english() -> &'static BTreeMap<String, String> {
    &EN
}

/// The Japanese catalog alone, without fallback.
pub fn japanese() -> &'static BTreeMap<String, String> {
    &JA
}

/// What rendering needs to know of the request being handled.
#[derive(Debug, Clone)]
struct Current {
    locale: Locale,
    /// Path and query of a GET page (where the language switch returns), else the dashboard.
    back: String,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// The locale of the request being handled (English outside a request).
pub fn current() -> Locale {
    CURRENT.try_with(|c| c.locale).unwrap_or(Locale::En)
}

/// Where the language switch of the page being rendered returns to.
pub fn current_path() -> String {
    CURRENT.try_with(|c| c.back.clone()).unwrap_or_else(|_| "/ui/".to_owned())
}

/// Runs `f` with `locale` as the current one (tests, rendering outside the router).
pub async fn scope<F: std::future::Future>(locale: Locale, f: F) -> F::Output {
    CURRENT.scope(Current { locale, back: "/ui/".to_owned() }, f).await
}

/// The message `key` in the current locale; the key itself when unknown
/// (templates cannot reach this: `tr` refuses unknown keys).
pub fn t(key: &str) -> String {
    catalog(current()).get(key).cloned().unwrap_or_else(|| key.to_owned())
}

/// The message `key` in the current locale, if the catalog has it.
pub fn lookup(key: &str) -> Option<String> {
    catalog(current()).get(key).cloned()
}

/// Middleware: handles the rest of the request in its locale.
pub async fn middleware(req: Request, next: Next) -> Response {
    let locale = Locale::of(req.headers());
    let path = req.uri().path_and_query().map_or("/ui/", |p| p.as_str());
    let back = if req.method() == axum::http::Method::GET && safe_back(path) && !path.starts_with("/ui/lang") {
        path.to_owned()
    } else {
        "/ui/".to_owned()
    };
    CURRENT.scope(Current { locale, back }, next.run(req)).await
}

/// Query of the language switch.
#[derive(Debug, Deserialize)]
pub struct SwitchQuery {
    to: String,
    back: Option<String>,
}

/// Whether `back` is a path of this panel (no scheme, host or `//`), so
/// the switch cannot redirect off-site.
pub fn safe_back(back: &str) -> bool {
    (back == "/ui" || back.starts_with("/ui/"))
        && !back.contains("//")
        && !back.contains('\\')
        && !back.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// `GET /ui/lang?to=ja&back=/ui/instances`: remembers the locale in a cookie
/// and goes back to the page.
pub async fn switch(headers: HeaderMap, Query(q): Query<SwitchQuery>) -> Response {
    let Some(locale) = Locale::parse(&q.to).filter(|_| q.to.len() <= 5) else {
        return (StatusCode::BAD_REQUEST, format!("unknown language {:?}; use en or ja", q.to)).into_response();
    };
    let back = q.back.unwrap_or_else(|| "/ui/".to_owned());
    if !safe_back(&back) {
        return (StatusCode::BAD_REQUEST, "back must be a path under /ui/ of this panel").into_response();
    }
    let secure = if over_tls(&headers) { "; Secure" } else { "" };
    let cookie = format!("{LANG_COOKIE}={}; Path=/ui; SameSite=Lax; Max-Age=31536000{secure}", locale.tag());
    ([(header::SET_COOKIE, cookie)], Redirect::to(&back)).into_response()
}

/// `tr(key="..", name=..)`: the message `key` with `{name}`-style
/// placeholders filled from the other arguments; an unknown key is an error.
pub fn tr_function(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let key = args.get("key").and_then(Value::as_str).ok_or("tr needs key=\"...\"")?;
    let mut msg = catalog(current()).get(key).cloned().ok_or_else(|| format!("unknown message key {key:?}"))?;
    for (name, v) in args {
        if name != "key" {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            msg = msg.replace(&format!("{{{name}}}"), &text);
        }
    }
    Ok(Value::String(msg))
}

/// `value | state`: a state name (`running`, ...) in the current locale,
/// unchanged when the catalog has no `state_<value>`.
pub fn state_filter(value: &Value, _args: &HashMap<String, Value>) -> tera::Result<Value> {
    let s = value.as_str().unwrap_or_default();
    Ok(catalog(current()).get(&format!("state_{s}")).map_or_else(|| value.clone(), |m| Value::String(m.clone())))
}

/// `value | tr_prefix(p="action_")`: the message `p` + value; an unknown key is an error.
pub fn prefixed_filter(value: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
    let p = args.get("p").and_then(Value::as_str).unwrap_or("");
    let key = format!("{p}{}", value.as_str().unwrap_or_default());
    catalog(current())
        .get(&key)
        .map(|m| Value::String(m.clone()))
        .ok_or_else(|| format!("unknown message key {key:?}").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn every_english_key_has_a_japanese_message_and_no_extra_keys() {
        let missing: Vec<_> = english().keys().filter(|k| !japanese().contains_key(*k)).collect();
        assert!(missing.is_empty(), "keys missing in ja.toml: {missing:?}");
        let unknown: Vec<_> = japanese().keys().filter(|k| !english().contains_key(*k)).collect();
        assert!(unknown.is_empty(), "keys in ja.toml that en.toml lacks: {unknown:?}");
        assert_eq!(catalog(Locale::Ja)["state_running"], "実行中");
        assert_eq!(catalog(Locale::En)["state_running"], "running");
    }

    #[test]
    fn locale_from_cookie_then_accept_language_then_english() {
        assert_eq!(Locale::of(&HeaderMap::new()), Locale::En);
        assert_eq!(Locale::of(&headers(&[(header::ACCEPT_LANGUAGE, "ja,en-US;q=0.9")])), Locale::Ja);
        assert_eq!(Locale::of(&headers(&[(header::ACCEPT_LANGUAGE, "ja-JP")])), Locale::Ja);
        assert_eq!(Locale::of(&headers(&[(header::ACCEPT_LANGUAGE, "en-US,ja;q=0.8")])), Locale::En);
        assert_eq!(Locale::of(&headers(&[(header::ACCEPT_LANGUAGE, "fr,ja;q=0.5")])), Locale::Ja);
        assert_eq!(Locale::of(&headers(&[(header::ACCEPT_LANGUAGE, "fr,de")])), Locale::En);
        assert_eq!(Locale::of(&headers(&[(header::ACCEPT_LANGUAGE, "ja;q=0")])), Locale::En);
        let both = headers(&[(header::ACCEPT_LANGUAGE, "ja"), (header::COOKIE, "kumo_session=x; lang=en")]);
        assert_eq!(Locale::of(&both), Locale::En);
        let junk = headers(&[(header::ACCEPT_LANGUAGE, "ja"), (header::COOKIE, "lang=xx")]);
        assert_eq!(Locale::of(&junk), Locale::Ja);
    }

    #[test]
    fn only_panel_paths_are_allowed_back() {
        for ok in ["/ui/", "/ui", "/ui/instances", "/ui/instances/i-1?x=1"] {
            assert!(safe_back(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/ui/",
            "//evil.example/ui/",
            "/ui//evil.example",
            "/api",
            "ui/",
            "/ui/\\evil",
            "/uix",
            "",
        ] {
            assert!(!safe_back(bad), "{bad}");
        }
    }
}
