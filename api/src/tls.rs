//! TLS for the controller: loading its certificate and key (PEM) into a
//! rustls server configuration, serving the router over HTTPS or plain HTTP,
//! trusting a CA for outgoing calls, and the small CA behind
//! `kumo-api tls generate`.
//!
//! One CA per cloud: it signs the controller's certificate (and the agents',
//! when they serve TLS); agents and clients trust only that CA.

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long in-flight requests (an agent's long poll is at most a minute) get
/// to finish on a TLS listener once shutdown begins.
const TLS_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Errors loading or generating certificates and keys. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not PEM, or holds none of what it should.
    #[error("{path} holds no {what} in PEM form{}", fmt_detail(.detail))]
    NoPem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM parser's complaint, if any.
        detail: Option<String>,
    },
    /// The key does not sign for the certificate, or rustls refuses them.
    #[error("the certificate {cert} and the key {key} cannot be used together")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// A file to write exists already.
    #[error("{0} exists already (remove it to make a new one)")]
    Exists(PathBuf),
    /// A file or directory could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A name is not usable in a certificate.
    #[error("'{0}' is not a DNS name or IP address usable in a certificate")]
    BadName(String),
    /// Certificate generation failed.
    #[error("cannot generate the certificate")]
    Generate(#[from] rcgen::Error),
    /// The CA in the directory does not verify the certificate just made with its key.
    #[error("the CA in {dir} did not verify the new certificate (was ca.pem made by another tool?)")]
    ForeignCa {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

fn fmt_detail(d: &Option<String>) -> String {
    d.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    const WHAT: &str = "certificate";
    let pem = read(WHAT, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::NoPem {
        what: WHAT,
        path: path.to_owned(),
        detail: Some(e.to_string()),
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoPem { what: WHAT, path: path.to_owned(), detail: None });
    }
    Ok(certs)
}

/// The private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "private key";
    let pem = read(WHAT, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let detail = match e {
            rustls::pki_types::pem::Error::NoItemsFound => None,
            other => Some(other.to_string()),
        };
        TlsError::NoPem { what: WHAT, path: path.to_owned(), detail }
    })
}

/// A rustls server configuration serving the chain in `cert` (the
/// certificate first, then any intermediates) with the key in `key`; HTTP/2
/// and HTTP/1.1 are offered.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let private = load_key(key)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|source| TlsError::Unusable { cert: cert.to_owned(), key: key.to_owned(), source })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` completes: over TLS with
/// `tls`, else plain HTTP. Every handler sees the peer's [`SocketAddr`]
/// (`ConnectInfo`). On shutdown no new connection is accepted and requests in
/// flight finish (on TLS, within a minute).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        return axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    };
    // The panel marks its cookies Secure when the request came over TLS.
    let app = app.layer(axum::middleware::map_request(mark_https)).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(TLS_SHUTDOWN_GRACE));
    });
    let listener = listener.into_std()?;
    axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))
        .handle(handle)
        .serve(app)
        .await
}

/// Says (to the panel) that the request came over TLS, replacing whatever the client claimed.
async fn mark_https(mut req: axum::extract::Request) -> axum::extract::Request {
    req.headers_mut().insert("x-forwarded-proto", axum::http::HeaderValue::from_static("https"));
    req
}

/// A reqwest client builder that trusts only the CA certificates in
/// `ca_file` (no built-in roots), for calls to hosts of this cloud.
pub fn trusting(builder: reqwest::ClientBuilder, ca_file: &Path) -> Result<reqwest::ClientBuilder, TlsError> {
    let mut builder = builder.tls_built_in_root_certs(false);
    for cert in load_certs(ca_file)? {
        let cert = reqwest::Certificate::from_der(&cert).map_err(|e| TlsError::NoPem {
            what: "CA certificate",
            path: ca_file.to_owned(),
            detail: Some(e.to_string()),
        })?;
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// The CA certificate's file in a generated directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file in a generated directory (mode 0600).
pub const CA_KEY: &str = "ca-key.pem";

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Whether a new CA was made (false: the directory's CA signed).
    pub new_ca: bool,
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// The new certificate.
    pub cert: PathBuf,
    /// Its key (mode 0600).
    pub key: PathBuf,
    /// The names and addresses it is valid for.
    pub names: Vec<String>,
}

/// Makes `<dir>/<cert_name>.pem` and `<dir>/<cert_name>-key.pem`, a server
/// certificate for `names` (DNS names or IP addresses) plus `localhost`,
/// `127.0.0.1` and `::1`, signed by the CA in `dir` (`ca.pem`, `ca-key.pem`),
/// which is made first when missing. Keys are ECDSA P-256, written mode 0600.
/// Existing certificates are never overwritten.
pub fn generate(dir: &Path, cert_name: &str, names: &[String]) -> Result<Generated, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    if cert_name.is_empty() || !cert_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(TlsError::BadName(cert_name.to_owned()));
    }
    let cert_path = dir.join(format!("{cert_name}.pem"));
    let key_path = dir.join(format!("{cert_name}-key.pem"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(TlsError::Exists(path.clone()));
        }
    }
    let mut all: Vec<String> = Vec::new();
    for name in names.iter().map(|n| n.trim()).chain(["localhost", "127.0.0.1", "::1"]) {
        let valid = name.parse::<IpAddr>().is_ok()
            || (!name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                }));
        if !valid {
            return Err(TlsError::BadName(name.to_owned()));
        }
        if !all.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            all.push(name.to_owned());
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.to_owned(), source })?;

    let year = this_year();
    // The CA's certificate is made the same way every time from its key, so
    // a later run signs with the CA of ca.pem without parsing it. Its name
    // carries a digest of its key: two clouds' CAs never share a name.
    let ca_params = |key: &KeyPair| {
        use sha2::Digest as _;
        let id = hex::encode(&sha2::Sha256::digest(key.public_key_der())[..6]);
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, format!("Kumo cloud CA {id}"));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        p.not_before = rcgen::date_time_ymd(year, 1, 1);
        p.not_after = rcgen::date_time_ymd(year + 20, 1, 1);
        p
    };
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key_path = dir.join(CA_KEY);
    let new_ca = !ca_key_path.exists();
    let (ca_cert, ca_key) = if new_ca {
        if ca_cert_path.exists() {
            return Err(TlsError::Exists(ca_cert_path));
        }
        let key = KeyPair::generate()?;
        let cert = ca_params(&key).self_signed(&key)?;
        write_file(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&ca_cert_path, cert.pem().as_bytes(), 0o644)?;
        (cert, key)
    } else {
        let pem = String::from_utf8_lossy(&read("CA private key", &ca_key_path)?).into_owned();
        let key = KeyPair::from_pem(&pem).map_err(|e| TlsError::NoPem {
            what: "CA private key",
            path: ca_key_path.clone(),
            detail: Some(e.to_string()),
        })?;
        (ca_params(&key).self_signed(&key)?, key)
    };

    let mut params = CertificateParams::new(all.clone())?;
    params.distinguished_name.push(DnType::CommonName, all[0].clone());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

    // The certificate must verify against the CA file that clients will trust.
    verify(&load_certs(&ca_cert_path)?, cert.der(), &all[0])
        .map_err(|source| TlsError::ForeignCa { dir: dir.to_owned(), source })?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Generated { new_ca, ca_cert: ca_cert_path, cert: cert_path, key: key_path, names: all })
}

/// Checks that `cert` is a valid server certificate for `name` under `roots`.
fn verify(roots: &[CertificateDer<'static>], cert: &CertificateDer<'_>, name: &str) -> Result<(), rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(store))
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let name =
        rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
    rustls::client::danger::ServerCertVerifier::verify_server_cert(
        verifier.as_ref(),
        cert,
        &[],
        &name,
        &[],
        rustls::pki_types::UnixTime::now(),
    )
    .map(drop)
}

/// The current UTC year (certificates start on its first day).
fn this_year() -> i32 {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
    // Days to a civil year (Howard Hinnant's algorithm, years only).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    i32::try_from(year).unwrap_or(2026)
}

/// Writes a new file with `mode`; refuses to replace one.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Write { path: path.to_owned(), source };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn generate_makes_a_ca_then_signs_more_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(dir.path(), "controller", &["kumo.example".into(), "10.1.2.3".into()]).unwrap();
        assert!(first.new_ca);
        assert_eq!(first.names, ["kumo.example", "10.1.2.3", "localhost", "127.0.0.1", "::1"]);
        for (file, mode) in [("ca-key.pem", 0o600), ("controller-key.pem", 0o600), ("ca.pem", 0o644)] {
            let meta = std::fs::metadata(dir.path().join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        server_config(&first.cert, &first.key).unwrap();
        // A second certificate from the same CA verifies against the same ca.pem.
        let second = generate(dir.path(), "agent", &["host-1".into()]).unwrap();
        assert!(!second.new_ca);
        verify(&load_certs(&first.ca_cert).unwrap(), &load_certs(&second.cert).unwrap()[0], "host-1").unwrap();
        // Nothing is overwritten.
        let err = generate(dir.path(), "controller", &[]).unwrap_err();
        assert!(err.to_string().contains("controller.pem exists already"), "{err}");
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["-x.example", "a b", "a..b", ""] {
            let err = generate(dir.path(), "controller", &[bad.into()]).unwrap_err();
            assert!(matches!(err, TlsError::BadName(_)), "{bad}: {err}");
        }
        assert!(matches!(generate(dir.path(), "../x", &[]), Err(TlsError::BadName(_))));
        assert!(!dir.path().join("ca.pem").exists(), "nothing written on a bad name");
    }

    #[test]
    fn unusable_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let made = generate(dir.path(), "controller", &[]).unwrap();
        let other = generate(dir.path(), "other", &[]).unwrap();
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let cases = [
            (server_config(&missing, &made.key).unwrap_err(), format!("cannot read certificate {}", missing.display())),
            (
                server_config(&made.cert, &missing).unwrap_err(),
                format!("cannot read private key {}", missing.display()),
            ),
            (server_config(&garbage, &made.key).unwrap_err(), format!("{} holds no certificate", garbage.display())),
            (server_config(&made.cert, &garbage).unwrap_err(), format!("{} holds no private key", garbage.display())),
            // A certificate in the key's place.
            (server_config(&made.cert, &made.cert).unwrap_err(), "holds no private key".to_owned()),
            (
                server_config(&made.cert, &other.key).unwrap_err(),
                format!("the certificate {} and the key {} cannot", made.cert.display(), other.key.display()),
            ),
        ];
        for (err, expected) in cases {
            assert!(err.to_string().contains(&expected), "{err} does not contain {expected}");
        }
    }

    #[test]
    fn the_year_is_plausible() {
        assert!((2024..2200).contains(&this_year()));
    }
}
