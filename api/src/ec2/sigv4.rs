//! AWS Signature Version 4: parsing the `Authorization: AWS4-HMAC-SHA256 ...`
//! header or the presigned query (`X-Amz-Algorithm=...&X-Amz-Signature=...`),
//! rebuilding the canonical request, and checking the HMAC in constant time.
//!
//! Pure functions over a [`Request`]; no database, no HTTP types beyond the
//! header map. [`sign`] is the client side, used by tests and `kumo-bench`.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm SigV4 defines.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash presigned URLs use.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Why a request's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// No `Authorization` header and no presigned query.
    #[error("the request is not signed: send AWS Signature Version 4 (Authorization: AWS4-HMAC-SHA256 ...)")]
    Missing,
    /// The header or query is there but malformed.
    #[error("malformed AWS Signature Version 4: {0}")]
    Malformed(String),
    /// The date is outside the allowed clock skew, or a presigned URL expired.
    #[error("{0}")]
    Expired(String),
    /// The signature does not match.
    #[error("AWS was not able to validate the provided access credentials")]
    Mismatch,
    /// The body is not the one the signature covers, or a body came where none may.
    #[error("{0}")]
    Payload(String),
}

/// What was received, in the form the canonical request needs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`.
    pub method: &'a str,
    /// The path as received (still percent-encoded).
    pub path: &'a str,
    /// The raw query string without `?` (may be empty).
    pub query: &'a str,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// The credential scope: `AKID/20150830/us-east-1/ec2/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The access key id.
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    /// Region name.
    pub region: String,
    /// Service name.
    pub service: String,
}

impl Credential {
    /// `date/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// A parsed signature, not yet verified.
#[derive(Debug, Clone)]
pub struct Signature {
    /// Who claims to sign.
    pub credential: Credential,
    /// Lowercase header names, in the order given.
    pub signed_headers: Vec<String>,
    /// The signature's bytes.
    pub signature: Vec<u8>,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    /// Seconds a presigned URL stays valid; `None` for header signatures.
    pub presigned_expires: Option<i64>,
}

fn malformed(m: impl Into<String>) -> SigError {
    SigError::Malformed(m.into())
}

fn parse_credential(raw: &str) -> Result<Credential, SigError> {
    let parts: Vec<&str> = raw.split('/').collect();
    match parts.as_slice() {
        [id, date, region, service, "aws4_request"] if !id.is_empty() && date.len() == 8 => Ok(Credential {
            access_key_id: (*id).to_owned(),
            date: (*date).to_owned(),
            region: (*region).to_owned(),
            service: (*service).to_owned(),
        }),
        _ => Err(malformed(format!("Credential '{raw}' is not ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request"))),
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Query pairs, percent-decoded (`+` is a space only in form bodies, not here).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Finds the signature in the header or the query.
pub fn parse(req: &Request<'_>) -> Result<Signature, SigError> {
    if let Some(auth) = header(req.headers, "authorization") {
        let rest = auth
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| malformed(format!("the Authorization header must start with {ALGORITHM}")))?;
        let (mut cred, mut signed, mut sig) = (None, None, None);
        for field in rest.split(',') {
            let field = field.trim();
            if let Some(v) = field.strip_prefix("Credential=") {
                cred = Some(v);
            } else if let Some(v) = field.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = field.strip_prefix("Signature=") {
                sig = Some(v);
            }
        }
        let credential = parse_credential(cred.ok_or_else(|| malformed("Credential is missing"))?)?;
        let signed_headers = signed.ok_or_else(|| malformed("SignedHeaders is missing"))?;
        let signature = hex::decode(sig.ok_or_else(|| malformed("Signature is missing"))?)
            .map_err(|_| malformed("Signature is not hex"))?;
        let amz_date =
            header(req.headers, "x-amz-date").ok_or_else(|| malformed("the X-Amz-Date header is missing"))?.to_owned();
        let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_ascii_lowercase).collect();
        if !signed_headers.iter().any(|h| h == "host") {
            return Err(malformed("SignedHeaders must include host"));
        }
        return Ok(Signature { credential, signed_headers, signature, amz_date, presigned_expires: None });
    }
    let pairs = query_pairs(req.query);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(algorithm) = get("X-Amz-Algorithm") else { return Err(SigError::Missing) };
    if algorithm != ALGORITHM {
        return Err(malformed(format!("X-Amz-Algorithm must be {ALGORITHM}")));
    }
    let credential =
        parse_credential(get("X-Amz-Credential").ok_or_else(|| malformed("X-Amz-Credential is missing"))?)?;
    let signed_headers: Vec<String> = get("X-Amz-SignedHeaders")
        .ok_or_else(|| malformed("X-Amz-SignedHeaders is missing"))?
        .split(';')
        .map(str::to_ascii_lowercase)
        .collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(malformed("X-Amz-SignedHeaders must include host"));
    }
    let signature = hex::decode(get("X-Amz-Signature").ok_or_else(|| malformed("X-Amz-Signature is missing"))?)
        .map_err(|_| malformed("X-Amz-Signature is not hex"))?;
    let amz_date = get("X-Amz-Date").ok_or_else(|| malformed("X-Amz-Date is missing"))?.to_owned();
    let expires = get("X-Amz-Expires")
        .ok_or_else(|| malformed("X-Amz-Expires is missing"))?
        .parse::<i64>()
        .ok()
        .filter(|e| (1..=604_800).contains(e))
        .ok_or_else(|| malformed("X-Amz-Expires must be 1-604800 seconds"))?;
    Ok(Signature { credential, signed_headers, signature, amz_date, presigned_expires: Some(expires) })
}

/// SigV4's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The canonical URI of a non-S3 service: the normalized path, encoded once more.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normalized = format!("/{}", segments.join("/"));
    if path.ends_with('/') && normalized.len() > 1 {
        normalized.push('/');
    }
    uri_encode(&normalized, true)
}

fn canonical_query(query: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(query)
        .into_iter()
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// A header's value as SigV4 canonicalizes it: values of repeated headers
/// joined by `,`, each trimmed with inner runs of spaces collapsed.
fn canonical_header_value(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(",")
}

/// The canonical request (task 1 of SigV4).
pub fn canonical_request(req: &Request<'_>, signed_headers: &[String], payload_hash: &str, presigned: bool) -> String {
    let mut out = String::new();
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_uri(req.path));
    out.push('\n');
    out.push_str(&canonical_query(req.query, presigned));
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        out.push_str(&canonical_header_value(req.headers, name));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// The string to sign (task 2).
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The signing key derived from the secret and the scope (task 3).
pub fn signing_key(secret: &str, c: &Credential) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), c.date.as_bytes());
    let k_region = hmac(&k_date, c.region.as_bytes());
    let k_service = hmac(&k_region, c.service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Parses `YYYYMMDDTHHMMSSZ` into seconds since the Unix epoch.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Formats seconds since the epoch as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The payload hash the canonical request must carry, checked against the body.
///
/// The body is always hashed: `x-amz-content-sha256`, when sent, must be that
/// hash (or `UNSIGNED-PAYLOAD` with no body), never a claim taken on trust. A
/// presigned request (its signature is in the URL, which anyone who saw it may
/// resend) and a `GET` carry no body at all.
fn payload_hashes(sig: &Signature, req: &Request<'_>) -> Result<Vec<String>, SigError> {
    let presigned = sig.presigned_expires.is_some();
    if !req.body.is_empty() && presigned {
        return Err(SigError::Payload("a presigned request carries no body".into()));
    }
    if !req.body.is_empty() && (req.method == "GET" || req.method == "HEAD") {
        return Err(SigError::Payload(format!("a {} request carries no body", req.method)));
    }
    let body_hash = sha256_hex(req.body);
    let claimed: Vec<&[u8]> = req.headers.get_all("x-amz-content-sha256").iter().map(|v| v.as_bytes()).collect();
    match claimed.as_slice() {
        [] if presigned => Ok(vec![UNSIGNED_PAYLOAD.to_owned(), body_hash]),
        [] => Ok(vec![body_hash]),
        [one] if *one == body_hash.as_bytes() => Ok(vec![body_hash]),
        [one] if *one == UNSIGNED_PAYLOAD.as_bytes() && req.body.is_empty() => Ok(vec![UNSIGNED_PAYLOAD.to_owned()]),
        [_] => Err(SigError::Payload("x-amz-content-sha256 is not the SHA-256 of the body".into())),
        _ => Err(SigError::Payload("x-amz-content-sha256 is given more than once".into())),
    }
}

/// Checks the date against the clock, the body against its hash and the
/// signature against `secret`. Returns the last second (since the epoch) at
/// which this same signature would still be accepted: a replay cache keeps it
/// that long.
pub fn verify(
    sig: &Signature,
    req: &Request<'_>,
    secret: &str,
    now_secs: i64,
    max_skew_secs: i64,
) -> Result<i64, SigError> {
    let signed_at = parse_amz_date(&sig.amz_date)
        .ok_or_else(|| malformed(format!("X-Amz-Date '{}' is not YYYYMMDDTHHMMSSZ", sig.amz_date)))?;
    if !sig.amz_date.starts_with(&sig.credential.date) {
        return Err(malformed("the Credential date does not match X-Amz-Date"));
    }
    let valid_until = match sig.presigned_expires {
        None if (now_secs - signed_at).abs() > max_skew_secs => {
            return Err(SigError::Expired(format!(
                "Request has expired: it was signed at {}, the server's time is {} and the allowed skew is {max_skew_secs} s",
                sig.amz_date,
                format_amz_date(now_secs)
            )));
        }
        Some(expires) if now_secs > signed_at + expires || signed_at - now_secs > max_skew_secs => {
            return Err(SigError::Expired(format!(
                "Request has expired: the presigned URL signed at {} is past its {expires} s",
                sig.amz_date
            )));
        }
        None => signed_at.saturating_add(max_skew_secs),
        Some(expires) => signed_at.saturating_add(expires),
    };
    let candidates = payload_hashes(sig, req)?;
    let key = signing_key(secret, &sig.credential);
    let scope = sig.credential.scope();
    for payload_hash in candidates {
        let creq = canonical_request(req, &sig.signed_headers, &payload_hash, sig.presigned_expires.is_some());
        let sts = string_to_sign(&sig.amz_date, &scope, &creq);
        let mut mac = HmacSha256::new_from_slice(&key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(sts.as_bytes());
        if mac.verify_slice(&sig.signature).is_ok() {
            return Ok(valid_until);
        }
    }
    Err(SigError::Mismatch)
}

/// Signs a request: returns the `Authorization` header value for a request
/// that carries `host` and `x-amz-date` (and whatever else `signed_headers` names).
pub fn sign(
    req: &Request<'_>,
    credential: &Credential,
    secret: &str,
    signed_headers: &[String],
    amz_date: &str,
) -> String {
    let creq = canonical_request(req, signed_headers, &sha256_hex(req.body), false);
    let sts = string_to_sign(amz_date, &credential.scope(), &creq);
    let signature = hex::encode(hmac(&signing_key(secret, credential), sts.as_bytes()));
    format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={signature}",
        credential.access_key_id,
        credential.scope(),
        signed_headers.join(";")
    )
}

/// Presigns a request: returns its query string (`query` followed by the
/// `X-Amz-*` parameters and the signature) for a request that carries `host`.
pub fn presign(req: &Request<'_>, credential: &Credential, secret: &str, amz_date: &str, expires_secs: i64) -> String {
    let signed = ["host".to_owned()];
    let mut query = req.query.to_owned();
    for (k, v) in [
        ("X-Amz-Algorithm", ALGORITHM.to_owned()),
        ("X-Amz-Credential", format!("{}/{}", credential.access_key_id, credential.scope())),
        ("X-Amz-Date", amz_date.to_owned()),
        ("X-Amz-Expires", expires_secs.to_string()),
        ("X-Amz-SignedHeaders", signed.join(";")),
    ] {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("{k}={}", uri_encode(&v, false)));
    }
    let creq = canonical_request(&Request { query: &query, ..*req }, &signed, UNSIGNED_PAYLOAD, true);
    let sts = string_to_sign(amz_date, &credential.scope(), &creq);
    let signature = hex::encode(hmac(&signing_key(secret, credential), sts.as_bytes()));
    format!("{query}&X-Amz-Signature={signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_round_trip() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(format_amz_date(951_782_400), "20000229T000000Z");
        for bad in ["", "20150830", "20151330T000000Z", "2015-08-30T12:36:00Z"] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn uri_encoding_keeps_only_unreserved() {
        assert_eq!(uri_encode("a b/c~d*", false), "a%20b%2Fc~d%2A");
        assert_eq!(canonical_uri("/a/./b/../c/"), "/a/c/");
        assert_eq!(canonical_uri(""), "/");
    }

    proptest::proptest! {
        #![proptest_config(crate::ec2::params::tests::cases())]

        /// Any Authorization header, query string, date and body: parse and
        /// verify answer an error or a result, never a panic.
        #[test]
        fn parse_and_verify_never_panic(
            auth in "(AWS4-HMAC-SHA256 )?((Credential|SignedHeaders|Signature)=[A-Za-z0-9/;_-]{0,40}[, ]{0,2}|\\PC){0,6}",
            query in "(X-Amz-(Algorithm|Credential|Date|Expires|SignedHeaders|Signature)=[A-Za-z0-9%/;-]{0,30}&?|\\PC){0,8}",
            date in "([0-9]{8}T[0-9]{6}Z|\\PC{0,20})",
            method in "(GET|POST|HEAD)",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            use_header in proptest::bool::ANY,
        ) {
            let mut headers = HeaderMap::new();
            if use_header {
                if let Ok(v) = axum::http::HeaderValue::from_str(&auth) {
                    headers.insert("authorization", v);
                }
            }
            if let Ok(v) = axum::http::HeaderValue::from_str(&date) {
                headers.insert("x-amz-date", v);
            }
            let req = Request { method: &method, path: "/", query: &query, headers: &headers, body: &body };
            if let Ok(sig) = parse(&req) {
                proptest::prop_assert!(sig.signed_headers.iter().any(|h| h == "host"));
                let _ = verify(&sig, &req, "secret", 1_700_000_000, 900);
            }
            let _ = parse_amz_date(&date);
        }
    }
}
