//! TLS on the listener (`--tls-cert`, `--tls-key`): rustls with the ring provider (its
//! TLS 1.3 record keys kept compact between records by `tls_keys`), TLS 1.2 and 1.3, and
//! ALPN offering `h2` then `http/1.1`. A browser that negotiates `h2` carries all its
//! streams to this server on one connection, free of HTTP/1.1's six connections per
//! origin. The connection itself is [`super::tls_stream`]'s, which holds
//! no buffer while a stream idles.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// ALPN protocol ids, in the server's order of preference.
pub const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The server's TLS identity and settings.
#[derive(Clone)]
pub struct Tls(Arc<ServerConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(…)")
    }
}

impl Tls {
    /// The rustls configuration every connection is accepted with.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.0.clone()
    }
}

/// Loads the certificate chain and private key (PEM); the error says which file is
/// wrong and how.
pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read a certificate chain from {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    let provider = Arc::new(super::tls_keys::provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Tls(Arc::new(config)))
}
