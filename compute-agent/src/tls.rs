//! TLS for the agent: the controller's CA it trusts (and nothing else) when
//! `controller_url` is https, and the certificate its own listener serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors reading certificates and keys; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
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
    /// The file holds none of what it should, in PEM form.
    #[error("{path} holds no {what} in PEM form")]
    NoPem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The certificate and key do not go together.
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
    /// The HTTP client could not be built with the CA.
    #[error("cannot use the CA in {path}")]
    Client {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let no_pem = || TlsError::NoPem { what, path: path.to_owned() };
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|_| no_pem())?;
    if certs.is_empty() {
        return Err(no_pem());
    }
    Ok(certs)
}

/// `builder` trusting only the certificates in `ca_file`: the built-in roots are off.
pub fn trust_only(builder: reqwest::ClientBuilder, ca_file: &Path) -> Result<reqwest::ClientBuilder, TlsError> {
    let mut builder = builder.tls_built_in_root_certs(false);
    for cert in load_certs("CA certificate", ca_file)? {
        let cert = reqwest::Certificate::from_der(&cert)
            .map_err(|source| TlsError::Client { path: ca_file.to_owned(), source })?;
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// A rustls server configuration for the chain in `cert` and the key in `key` (PEM).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certs("certificate", cert)?;
    let private = PrivateKeyDer::from_pem_slice(&read("private key", key)?)
        .map_err(|_| TlsError::NoPem { what: "private key", path: key.to_owned() })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|source| TlsError::Unusable { cert: cert.to_owned(), key: key.to_owned(), source })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
