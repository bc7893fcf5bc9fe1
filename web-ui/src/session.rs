//! The session cookie (the API's JWT), CSRF tokens and the form extractor that
//! checks them.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::PanelError;

/// Name of the cookie holding the JWT.
pub const SESSION_COOKIE: &str = "kumo_session";
/// Name of the double-submit cookie of the login form (there is no session yet).
pub const LOGIN_CSRF_COOKIE: &str = "kumo_login_csrf";
/// Name of the hidden form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// What the panel reads from the JWT for display (role for the menu, expiry
/// for the cookie). Never trusted for authorization: the API verifies the
/// token on every call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Project id.
    pub prj: String,
    /// `admin` or `member`.
    pub role: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

impl Claims {
    /// Decodes a JWT's payload without checking its signature.
    pub fn peek(jwt: &str) -> Option<Self> {
        let payload = jwt.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Domain-separation key of the CSRF tokens. It need not be secret: the
/// secret is the JWT itself, which only the browser's HttpOnly cookie holds.
/// Being fixed, every controller replica (and a restarted one) accepts the
/// tokens of every other's pages.
pub const CSRF_KEY: &[u8] = b"kumo-panel-csrf-v1";

/// The CSRF token of a session: HMAC-SHA256 of its JWT under `key`
/// ([`CSRF_KEY`] in the panel). A page's token reveals nothing of the JWT, and
/// a cross-site attacker, who cannot read the JWT, cannot compute it.
pub fn csrf_token(key: &[u8], jwt: &str) -> String {
    #[allow(clippy::expect_used)] // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(jwt.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Compares in time independent of where the strings differ (`subtle`).
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// Whether the browser reached us over TLS (directly or through a proxy).
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict (no other site's page can
/// make the browser send it), path /ui, Secure over TLS.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> String {
    cookie::Cookie::build((name, value))
        .path("/ui")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age_secs.max(0)))
        .secure(secure)
        .build()
        .to_string()
}

/// A logged-in browser: its JWT, still unexpired.
#[derive(Debug, Clone)]
pub struct Session {
    /// The JWT.
    pub token: String,
    /// Its claims (display only).
    pub claims: Claims,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl Session {
    /// Whether the menu shows the admin pages (the API decides access).
    pub fn is_admin(&self) -> bool {
        self.claims.role == "admin"
    }
}

fn now_secs() -> i64 {
    kumo_wire::Timestamp::now().millis() / 1000
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = PanelError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, PanelError> {
        let token = cookie(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty()).ok_or(PanelError::LoggedOut)?;
        let claims = Claims::peek(&token).ok_or(PanelError::LoggedOut)?;
        if claims.exp <= now_secs() {
            return Err(PanelError::Expired);
        }
        let csrf = csrf_token(CSRF_KEY, &token);
        Ok(Self { token, claims, csrf })
    }
}

/// The fields of a posted form, in order (a name may repeat, e.g. security groups).
#[derive(Debug, Clone, Default)]
pub struct FormData(pub Vec<(String, String)>);

impl FormData {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Result<Self, PanelError> {
        serde_urlencoded::from_bytes(body).map(Self).map_err(|e| PanelError::BadForm(e.to_string()))
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> String {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).unwrap_or_default()
    }

    /// The first value of `name`, trimmed, or None when absent or empty.
    pub fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name)).filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim().to_owned()).collect()
    }

    /// The fields as a JSON object for re-rendering a form (first value of
    /// each name; the CSRF token left out).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.0 {
            if k != CSRF_FIELD && !map.contains_key(k) {
                map.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
        }
        serde_json::Value::Object(map)
    }
}

/// A form posted by a logged-in browser whose CSRF token checked out. Every
/// state-changing handler takes this, so none can forget the check.
#[derive(Debug)]
pub struct Posted {
    /// The session.
    pub session: Session,
    /// The fields.
    pub form: FormData,
}

impl<S: Send + Sync> FromRequest<S> for Posted {
    type Rejection = PanelError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PanelError> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let req = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| PanelError::BadForm(e.to_string()))?;
        let form = FormData::parse(&bytes)?;
        if !same(&form.get(CSRF_FIELD), &session.csrf) {
            return Err(PanelError::Csrf);
        }
        Ok(Self { session, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", b64(br#"{"alg":"HS256"}"#), b64(claims.to_string().as_bytes()))
    }

    #[test]
    fn csrf_tokens_differ_by_session_and_key() {
        let a = csrf_token(b"key-1", "jwt-a");
        assert_eq!(a, csrf_token(b"key-1", "jwt-a"));
        assert_ne!(a, csrf_token(b"key-1", "jwt-b"));
        assert_ne!(a, csrf_token(b"key-2", "jwt-a"));
        assert_eq!(a.len(), 64);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &a[..63]));
        assert!(!same(&a, ""));
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let t = jwt(&serde_json::json!({"sub": "usr-1", "prj": "prj-1", "role": "member", "iat": 1, "exp": 99}));
        let c = Claims::peek(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.role.as_str(), c.exp), ("usr-1", "member", 99));
        assert!(Claims::peek("not-a-jwt").is_none());
        assert!(Claims::peek("a.!!!.c").is_none());
    }

    #[test]
    fn cookies_are_found_among_several() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; kumo_session=tok.en.x".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok.en.x"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn session_cookie_attributes() {
        assert_eq!(set_cookie("s", "v", 3600, false), "s=v; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=3600");
        assert_eq!(set_cookie("s", "", -5, true), "s=; HttpOnly; SameSite=Strict; Secure; Path=/ui; Max-Age=0");
        let mut h = HeaderMap::new();
        assert!(!over_tls(&h));
        h.insert("x-forwarded-proto", "HTTPS".parse().unwrap());
        assert!(over_tls(&h));
    }

    #[test]
    fn forms_keep_repeated_fields_and_drop_the_token_when_echoed() {
        let f = FormData::parse(b"name=web+1&sg=a&sg=b&sg=&csrf=x").unwrap();
        assert_eq!(f.get("name"), "web 1");
        assert_eq!(f.all("sg"), vec!["a", "b"]);
        assert_eq!(f.opt("missing"), None);
        assert_eq!(f.to_json(), serde_json::json!({"name": "web 1", "sg": "a"}));
    }
}
