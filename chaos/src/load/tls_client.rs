//! The benchmark clients' side of TLS: a connector that trusts one CA (the test CA in
//! `fixtures/tls/`) and offers ALPN `http/1.1`, so streams take the server's lean path.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Connects over TLS to servers whose certificate the CA signed for `127.0.0.1`.
#[derive(Clone)]
pub struct TlsConnect {
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConnect")
    }
}

impl TlsConnect {
    /// Trusts the CA certificate(s) in `ca_pem`.
    pub fn trusting(ca_pem: &Path) -> anyhow::Result<TlsConnect> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem).with_context(|| format!("reading {}", ca_pem.display()))? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConnect { connector: TlsConnector::from(Arc::new(config)) })
    }

    pub async fn connect(&self, addr: SocketAddr) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await.context("connect")?;
        tcp.set_nodelay(true)?;
        let name = ServerName::from(addr.ip());
        self.connector.connect(name, tcp).await.context("TLS handshake")
    }
}
