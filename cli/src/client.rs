//! A thin typed client for the controller's native JSON API.

use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use indicatif::ProgressBar;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::io::ReaderStream;

use crate::error::Error;

/// How long an ordinary request may take (uploads have no limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size when streaming a file.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// A decoded answer together with the body it came from, so that
/// `--output json` can print exactly what the controller sent.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The decoded body.
    pub value: T,
    /// The body as received.
    pub raw: Vec<u8>,
}

/// A client bound to one controller and, usually, one bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client for `endpoint` (already normalized) sending `token`, if any.
    /// With `ca_cert`, https connections trust only the CA certificates in
    /// that PEM file (the cloud's `ca.pem`), not the public roots.
    pub fn new(endpoint: &str, token: Option<String>, ca_cert: Option<&Path>) -> Result<Self, Error> {
        let base = Url::parse(endpoint).map_err(|_| Error::BadEndpoint(endpoint.to_owned()))?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("kumo-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(path) = ca_cert {
            builder = builder.tls_built_in_root_certs(false);
            for cert in read_ca(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|source| Error::Transport { url: endpoint.to_owned(), source })?;
        Ok(Self { http, base, token })
    }

    /// The URL of `segments` under the endpoint; each segment is percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `GET` with a query string made of `query`'s fields (`None`s left out).
    pub async fn get<T: DeserializeOwned>(&self, segments: &[&str], query: &impl Serialize) -> Result<Reply<T>, Error> {
        let url = self.url(segments);
        let req = self.request(Method::GET, url.clone()).query(query);
        decode(&url, self.send(req, &url).await?)
    }

    /// `GET` a body that is not JSON (an invoice as CSV), as text.
    pub async fn get_text(&self, segments: &[&str], query: &impl Serialize) -> Result<String, Error> {
        let url = self.url(segments);
        let req = self.request(Method::GET, url.clone()).query(query);
        let body = self.send(req, &url).await?;
        String::from_utf8(body).map_err(|_| Error::Invalid(format!("{url} answered with text that is not UTF-8")))
    }

    /// `POST` a JSON body.
    pub async fn post<T: DeserializeOwned>(&self, segments: &[&str], body: &impl Serialize) -> Result<Reply<T>, Error> {
        let url = self.url(segments);
        let req = self.request(Method::POST, url.clone()).json(body);
        decode(&url, self.send(req, &url).await?)
    }

    /// `POST` with no body (`/hosts/{name}/disable` and the like).
    pub async fn post_empty<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<Reply<T>, Error> {
        let url = self.url(segments);
        let req = self.request(Method::POST, url.clone());
        decode(&url, self.send(req, &url).await?)
    }

    /// `POST` with no body and a query string made of `query`'s fields.
    pub async fn post_query<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &impl Serialize,
    ) -> Result<Reply<T>, Error> {
        let url = self.url(segments);
        let req = self.request(Method::POST, url.clone()).query(query);
        decode(&url, self.send(req, &url).await?)
    }

    /// `DELETE` that answers with a body (instances: 202 and the instance).
    pub async fn delete<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<Reply<T>, Error> {
        let url = self.url(segments);
        let req = self.request(Method::DELETE, url.clone());
        decode(&url, self.send(req, &url).await?)
    }

    /// `DELETE` that answers 204 with no body.
    pub async fn delete_no_content(&self, segments: &[&str]) -> Result<(), Error> {
        let url = self.url(segments);
        let req = self.request(Method::DELETE, url.clone());
        self.send(req, &url).await.map(drop)
    }

    /// `PUT` the file at `path` as the raw body, streamed from disk with its
    /// length declared up front; `progress` advances by the bytes sent.
    pub async fn put_file<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        path: &Path,
        progress: ProgressBar,
    ) -> Result<Reply<T>, Error> {
        let read_err = |source| Error::Read { path: path.to_owned(), source };
        let file = tokio::fs::File::open(path).await.map_err(read_err)?;
        let len = file.metadata().await.map_err(read_err)?.len();
        progress.set_length(len);
        let stream =
            ReaderStream::with_capacity(file, UPLOAD_CHUNK).inspect_ok(move |chunk| progress.inc(chunk.len() as u64));
        let url = self.url(segments);
        let req = self
            .authorize(self.http.request(Method::PUT, url.clone()))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        decode(&url, self.send(req, &url).await?)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.authorize(self.http.request(method, url)).timeout(REQUEST_TIMEOUT)
    }

    fn authorize(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends `req` and returns the body of a success answer; error statuses
    /// become [`Error::Api`] (or [`Error::UnexpectedStatus`] without Kumo's body).
    async fn send(&self, req: RequestBuilder, url: &Url) -> Result<Vec<u8>, Error> {
        let transport = |source: reqwest::Error| {
            if crate::error::chain_contains(&source, "invalid peer certificate") {
                return Error::UntrustedCertificate { url: url.to_string(), source: source.without_url() };
            }
            Error::Transport { url: url.to_string(), source: source.without_url() }
        };
        let response = req.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?.to_vec();
        if status.is_success() {
            return Ok(body);
        }
        Err(error_from_body(url, status, &body))
    }
}

/// The certificates in the PEM file at `path` (at least one).
fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let pem = std::fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    let bad = || Error::Invalid(format!("{} holds no CA certificate in PEM form", path.display()));
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| bad())?;
    if certs.is_empty() {
        return Err(bad());
    }
    Ok(certs)
}

/// The error for an answer with an error `status`.
fn error_from_body(url: &Url, status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<kumo_wire::ErrorBody>(body) {
        Ok(body) => Error::Api { status, body },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let mut snippet: String = crate::error::one_line(&text).chars().take(200).collect();
            if text.chars().count() > 200 {
                snippet.push('…');
            }
            Error::UnexpectedStatus { url: url.to_string(), status, snippet }
        }
    }
}

fn decode<T: DeserializeOwned>(url: &Url, raw: Vec<u8>) -> Result<Reply<T>, Error> {
    match serde_json::from_slice(&raw) {
        Ok(value) => Ok(Reply { value, raw }),
        Err(source) => Err(Error::Decode { url: url.to_string(), source }),
    }
}

impl Client {
    /// `POST` the file at `path` as the raw body with `query`, streamed from
    /// disk with its length declared up front; `progress` advances by the bytes sent.
    pub async fn post_file<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &impl Serialize,
        path: &Path,
        progress: ProgressBar,
    ) -> Result<Reply<T>, Error> {
        let read_err = |source| Error::Read { path: path.to_owned(), source };
        let file = tokio::fs::File::open(path).await.map_err(read_err)?;
        let len = file.metadata().await.map_err(read_err)?.len();
        progress.set_length(len);
        let stream =
            ReaderStream::with_capacity(file, UPLOAD_CHUNK).inspect_ok(move |chunk| progress.inc(chunk.len() as u64));
        let url = self.url(segments);
        let req = self
            .authorize(self.http.request(Method::POST, url.clone()))
            .query(query)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        decode(&url, self.send(req, &url).await?)
    }

    /// `PUT` a JSON body.
    pub async fn put<T: DeserializeOwned>(&self, segments: &[&str], body: &impl Serialize) -> Result<Reply<T>, Error> {
        let url = self.url(segments);
        let req = self.request(Method::PUT, url.clone()).json(body);
        decode(&url, self.send(req, &url).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_segments_are_encoded_and_base_paths_kept() {
        let client = Client::new("https://h:8443/kumo", None, None).expect("client");
        assert_eq!(
            client.url(&["v1", "images", "my image/2"]).as_str(),
            "https://h:8443/kumo/v1/images/my%20image%2F2"
        );
        let client = Client::new("http://h", None, None).expect("client");
        assert_eq!(client.url(&["v1", "flavors"]).as_str(), "http://h/v1/flavors");
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = Client::new("https://h", None, Some(&missing)).expect_err("missing file");
        assert!(crate::error::error_line(&err).starts_with(&format!("error: cannot read {}", missing.display())));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello\n").expect("write");
        let err = Client::new("https://h", None, Some(&garbage)).expect_err("no certificate");
        assert_eq!(
            crate::error::error_line(&err),
            format!("error: {} holds no CA certificate in PEM form", garbage.display())
        );
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let url = Url::parse("http://h/v1/x").expect("url");
        let err = error_from_body(&url, StatusCode::CONFLICT, br#"{"code":"conflict","message":"image in use"}"#);
        assert_eq!(crate::error::error_line(&err), "error: image in use (conflict)");
        let err = error_from_body(&url, StatusCode::BAD_GATEWAY, b"<html>\n<b>oops</b>\n</html>");
        assert_eq!(
            crate::error::error_line(&err),
            "error: http://h/v1/x answered 502 Bad Gateway: <html> <b>oops</b> </html>"
        );
    }
}
