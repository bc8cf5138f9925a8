//! TLS: a browser-like client negotiates HTTP/2 by ALPN and gets its streams over one
//! connection; an HTTP/1.1 client gets the lean stream path over TLS; a client speaking
//! plain HTTP to the TLS port is dropped without a trace.

use std::path::PathBuf;
use std::sync::Arc;

use hyper::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sse_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls").join(name)
}

fn tls_config() -> Config {
    Config { tls_cert: Some(fixture("server.pem")), tls_key: Some(fixture("server.key")), ..config() }
}

/// A TLS connection to `server` trusting only the test CA, offering `alpn`.
async fn connect(server: &TestServer, alpn: &[u8]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(fixture("ca.pem")).unwrap()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(client)).connect(ServerName::try_from("localhost").unwrap(), tcp).await;
    let tls = tls.expect("the handshake with the test CA's certificate succeeds");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "the server agreed to {:?}", String::from_utf8_lossy(alpn));
    tls
}

#[tokio::test]
async fn streams_and_publishes_work_over_tls_with_h2_and_http1() {
    let server = TestServer::start(tls_config()).await;
    for (alpn, proto) in [(&b"h2"[..], Proto::Http2), (b"http/1.1", Proto::Http1)] {
        let stream = StreamClient::over(connect(&server, alpn).await, "/events?topic=secure", None, proto).await;
        assert_eq!(stream.status, StatusCode::OK, "{proto:?}");
        let mut events = stream.events();
        let data = format!("over {proto:?}");
        let id = publish_over(connect(&server, b"http/1.1").await, "secure", &data).await;
        let event = events.next_within(PATIENCE).await.expect("the event arrives over TLS");
        assert_eq!((event.id, event.data), (id, data), "{proto:?}");
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_dropped_and_leaves_nothing_open() {
    let server = TestServer::start(tls_config()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /events?topic=t HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await.expect("closed in time");
    assert!(!answer.starts_with(b"HTTP/"), "no plain HTTP answer at all: {read:?} {answer:?}");
    let metrics = server.metrics.clone();
    eventually("the connection is closed", || metrics.connections() == 0).await;
    assert_eq!(server.metrics.rejected_total("tls_handshake"), 1);
}

/// The drain's goodbye is the stream's last write: over TLS it must be flushed and the
/// stream closed with `close_notify` (a TLS stream holds its last write until then), so
/// the client reads the goodbye and a clean end, never a truncated one.
#[tokio::test]
async fn a_drained_tls_stream_gets_its_goodbye_and_a_clean_close() {
    let mut server = TestServer::start(tls_config()).await;
    let mut tls = connect(&server, b"http/1.1").await;
    tls.write_all(b"GET /events?topic=t HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut opened = vec![0u8; 1024];
    let n = tls.read(&mut opened).await.unwrap();
    assert!(String::from_utf8_lossy(&opened[..n]).starts_with("HTTP/1.1 200"), "{:?}", &opened[..n]);
    server.begin_shutdown();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut rest)).await.expect("closed in time");
    read.expect("a clean TLS close (close_notify), not a truncated stream");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("retry: "), "the goodbye arrived: {rest:?}");
    assert!(rest.ends_with("0\r\n\r\n"), "the chunked body ended: {rest:?}");
    server.finished().await;
}
