//! HTTPS: the server's certificate and key from PEM files, and optionally
//! the certificate authority whose client certificates it requires.
//!
//! A connection to a TLS port that speaks plain HTTP gets a plain `400`
//! saying to use `https://`, rather than a handshake error nobody reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the server's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, the server's own first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With it, clients must present a certificate this CA (PEM) signed.
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS material cannot be used: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {path}: {what}")]
pub struct TlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub what: String,
}

fn error(path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.to_owned(),
        what: what.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, e))?;
    if certs.is_empty() {
        return Err(error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads the files into a rustls configuration (HTTP/1.1 only).
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = certificates(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| error(&self.key, e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| error(&self.cert, e))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(ca)? {
                    roots.add(cert).map_err(|e| error(ca, e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| error(ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| error(&self.key, format!("does not fit the certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The TLS configuration a server uses for each new connection, which can
/// be replaced while it runs (new certificates on SIGHUP): connections
/// already open keep the one they began with.
#[derive(Debug, Clone)]
pub struct ServerTls(Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>);

impl ServerTls {
    /// Starting with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        ServerTls(Arc::new(std::sync::RwLock::new(config)))
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Uses `config` from the next connection on.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = config;
    }
}

/// The answer to plain HTTP sent to a TLS port.
pub(crate) fn plain_http_on_tls() -> String {
    let body = serde_json::to_string(&crate::api::ErrorBody {
        error: crate::api::ErrorDetail {
            code: crate::api::ErrorCode::HttpsRequired.as_str().into(),
            message: "this port speaks HTTPS: use an https:// URL".into(),
            field: None,
        },
    })
    .expect("an error body serialises");
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Whether a connection's first byte starts a TLS handshake (a record of
/// type 22) rather than an HTTP request (an ASCII method).
pub(crate) fn starts_tls(first: u8) -> bool {
    first == 0x16
}
