//! Tokens never reach the log. A test binary of its own: it installs the process-wide
//! log subscriber at the most verbose level, which no other test may share.

#[allow(dead_code)]
#[path = "http/support.rs"]
mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sse_server::Config;
use support::{config, request_with, StreamClient, TestServer, ALL_PROTOS};
use tokio::net::TcpStream;

const KEY: &str = "a-logging-test-key-of-32-bytes!!";

fn sign(claims: serde_json::Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(KEY.as_bytes())).unwrap()
}

/// A log writer that keeps what it is given.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line, the HTTP/2 library's included, at the most verbose level, while tokens
/// travel in headers, cookies and queries on every path, accepted and refused: none of
/// them shows a token.
#[tokio::test]
async fn tokens_never_reach_the_log_even_at_trace_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let reader = sign(serde_json::json!({"sse": {"subscribe": ["private/*"]}}));
    let publisher = sign(serde_json::json!({"sse": {"publish": ["*"]}}));
    let forged = format!("{}x", &publisher[..publisher.len() - 1]);
    let server = TestServer::start(Config {
        publish_tokens: vec!["static-publish-token".parse().unwrap()],
        jwt_secret: Some(KEY.parse().unwrap()),
        private_topics: vec!["private/*".parse().unwrap()],
        ..config()
    })
    .await;
    for token in [&reader, &forged] {
        let bearer = format!("Bearer {token}");
        let cookie = format!("sse_token={token}");
        for proto in ALL_PROTOS {
            for (path, headers) in [
                ("/events?topic=private/a".to_owned(), vec![("authorization", bearer.as_str())]),
                ("/events?topic=private/a".to_owned(), vec![("cookie", cookie.as_str())]),
                (format!("/events?topic=private/a&access_token={token}"), vec![]),
            ] {
                let tcp = TcpStream::connect(server.addr).await.unwrap();
                let stream = StreamClient::with_headers(tcp, &path, &headers, proto).await;
                assert!(matches!(stream.status.as_u16(), 200 | 401), "{proto:?}: {}", stream.status);
            }
        }
    }
    for token in [publisher.as_str(), forged.as_str(), "static-publish-token"] {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let bearer = format!("Bearer {token}");
        request_with(tcp, "POST", "/events?topic=private/a", &[("authorization", &bearer)], "x").await;
    }
    // Lines logged as connections close count too.
    let metrics = server.metrics.clone();
    support::eventually("every connection closed", || metrics.connections() == 0).await;
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("serving") && log.contains("h2::"), "the log was captured, HTTP/2 included: {log}");
    for secret in [&reader, &publisher, &forged, &"static-publish-token".to_owned()] {
        // The signature part alone is specific to each token.
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token reached the log");
    }
    assert!(!log.contains(KEY), "the signing key reached the log");
}
