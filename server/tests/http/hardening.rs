//! Hostile HTTP at the socket: malformed heads, header floods, pipelined garbage, bodies
//! that stop or crawl, `Transfer-Encoding` tricks, absurd targets, and per-client limits.
//! Each gets a clean error or a close, publishes nothing it should not, and every
//! connection is gone afterwards.

use std::time::Duration;

use hyper::StatusCode;
use sse_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Sends `bytes` (then half-closes when `close` is set) and reads the answer until the
/// server closes, within `PATIENCE`.
async fn exchange(server: &TestServer, bytes: &[u8], close: bool) -> String {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    if close {
        tcp.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the server closed the connection within {PATIENCE:?}: {:?}",
        String::from_utf8_lossy(&answer)
    );
    String::from_utf8_lossy(&answer).into_owned()
}

/// The statuses of every response in `answer`, in order.
fn statuses(answer: &str) -> Vec<u16> {
    answer.match_indices("HTTP/1.1 ").filter_map(|(at, _)| answer.get(at + 9..at + 12)?.parse().ok()).collect()
}

async fn all_connections_closed(server: &TestServer) {
    let metrics = server.metrics.clone();
    eventually("every connection closed", || metrics.connections() == 0).await;
}

#[tokio::test]
async fn malformed_heads_and_header_floods_get_a_clean_error_and_a_close() {
    let server = TestServer::start(config()).await;
    let many_headers: String = (0..65).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("blank lines, then garbage", b"\r\n\r\nGARBAGE\r\n\r\n".to_vec(), 400),
        ("garbage", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("binary", vec![0, 1, 2, 0xff, b'\r', b'\n', b'\r', b'\n'], 400),
        ("header without colon", b"GET /events?topic=a HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), 400),
        ("space before colon", b"GET /events?topic=a HTTP/1.1\r\nhost : x\r\n\r\n".to_vec(), 400),
        ("too many headers", format!("GET /events?topic=a HTTP/1.1\r\n{many_headers}\r\n").into_bytes(), 431),
        ("a huge header", format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(), 431),
        (
            "an absurd stream query",
            format!("GET /events?topic=a&x={} HTTP/1.1\r\n\r\n", "q".repeat(13_000)).into_bytes(),
            414,
        ),
        (
            "an absurd publish query",
            format!("POST /events?topic=a&x={} HTTP/1.1\r\ncontent-length: 0\r\n\r\n", "q".repeat(13_000)).into_bytes(),
            414,
        ),
        (
            "an oversized resume header",
            format!("GET /events?topic=a HTTP/1.1\r\nlast-event-id: {}\r\n\r\n", "9".repeat(17_000)).into_bytes(),
            431,
        ),
    ];
    for (what, bytes, status) in cases {
        let answer = exchange(&server, &bytes, false).await;
        assert_eq!(statuses(&answer), [status], "{what}: {answer:?}");
        assert!(answer.contains("\r\n\r\n{\"error\":\""), "{what}: a JSON error: {answer:?}");
    }
    assert_eq!(server.metrics.published_total(), 0);
    all_connections_closed(&server).await;
}

#[tokio::test]
async fn pipelined_garbage_after_a_good_request_is_refused_without_touching_it() {
    let server = TestServer::start(config()).await;
    let answer = exchange(
        &server,
        b"POST /events?topic=p HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nfirstGARBAGE \x00\x01 NOT HTTP\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(statuses(&answer), [201, 400], "{answer:?}");
    assert_eq!(server.metrics.published_total(), 1, "the good request published once, the garbage nothing");
    all_connections_closed(&server).await;
}

#[tokio::test]
async fn bodies_that_stop_lie_or_crawl_publish_nothing() {
    let server = TestServer::start(Config { body_timeout: Duration::from_millis(300), ..config() }).await;
    let head = |extra: &str| format!("POST /events?topic=b HTTP/1.1\r\nhost: x\r\n{extra}\r\n");
    // Half a body, then the client leaves: nothing to answer, nothing published.
    exchange(&server, format!("{}0123456789", head("content-length: 100\r\n")).as_bytes(), true).await;
    // A body that stops arriving: 408 once the body timeout passes.
    let answer = exchange(&server, format!("{}01", head("content-length: 10\r\n")).as_bytes(), false).await;
    assert_eq!(statuses(&answer), [408], "{answer:?}");
    let cases = [
        ("two different lengths", head("content-length: 5\r\ncontent-length: 6\r\n") + "hello!", 400),
        ("a bad chunk size", head("transfer-encoding: chunked\r\n") + "zz\r\nhello\r\n0\r\n\r\n", 400),
        ("a coding that is not chunked", head("transfer-encoding: gzip\r\n") + "hello", 400),
        (
            "a chunk past the event limit",
            head("transfer-encoding: chunked\r\n") + "10001\r\n" + &"a".repeat(65_537),
            413,
        ),
        ("a negative length", head("content-length: -5\r\n") + "hello", 400),
    ];
    for (what, bytes, status) in cases {
        let answer = exchange(&server, bytes.as_bytes(), false).await;
        assert_eq!(statuses(&answer).first(), Some(&status), "{what}: {answer:?}");
    }
    // Chunked framing and a content length together: the request may be refused or read
    // as chunked (RFC 9112 section 6.3), but the bytes after the chunked body are never a
    // second request on this connection.
    assert_eq!(server.metrics.published_total(), 0, "no stopped, stalled or malformed body was published");
    let smuggle = head("content-length: 40\r\ntransfer-encoding: chunked\r\n")
        + "0\r\n\r\nPOST /events?topic=smuggled HTTP/1.1\r\ncontent-length: 1\r\n\r\nx";
    let answer = exchange(&server, smuggle.as_bytes(), false).await;
    let statuses = statuses(&answer);
    assert!(matches!(statuses[..], [400] | [201]), "{answer:?}");
    let published = server.metrics.published_total();
    assert_eq!(published, u64::from(statuses == [201]), "only the chunked body, and only if accepted");
    all_connections_closed(&server).await;
}

#[tokio::test]
async fn one_address_gets_at_most_its_connection_limit() {
    let server = TestServer::start(Config { max_connections_per_ip: 3, ..config() }).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(StreamClient::open(server.addr, "/events?topic=ip", None, Proto::Http1).await);
    }
    let (status, headers, body) = request(server.addr, "GET", "/healthz", "").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("too_many_connections_from_address") && headers.contains_key("retry-after"), "{body}");
    assert_eq!(server.metrics.rejected_total("max_connections_per_ip"), 1);
    streams.pop();
    let addr = server.addr;
    let freed = async {
        loop {
            if request(addr, "GET", "/healthz", "").await.0 == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, freed).await.expect("a closed stream frees its address's slot");
    drop(streams);
    all_connections_closed(&server).await;
}

#[tokio::test]
async fn a_publisher_past_its_rate_is_told_to_come_back_later() {
    const RATE: u32 = 2;
    let tokens = vec!["fast-publisher".parse().unwrap(), "other-publisher".parse().unwrap()];
    let server = TestServer::start(Config { publish_rate: RATE, publish_tokens: tokens, ..config() }).await;
    let post = |token: &'static str| async move {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let auth = format!("Bearer {token}");
        request_with(tcp, "POST", "/events?topic=r", &[("authorization", &auth)], "x").await
    };
    let started = tokio::time::Instant::now();
    let (mut created, mut limited) = (0, 0);
    for _ in 0..10 {
        let (status, headers, body) = post("fast-publisher").await;
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert!(body.contains("rate_limited") && headers["retry-after"] == "1", "{headers:?} {body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // A burst of RATE, then RATE a second: whatever the machine's speed, no more got in.
    let allowed = RATE as f64 * (1.0 + started.elapsed().as_secs_f64());
    assert!(limited > 0 && f64::from(created) <= allowed, "{created} created, {limited} limited, {allowed} allowed");
    assert_eq!(post("other-publisher").await.0, StatusCode::CREATED, "another publisher has its own budget");
    all_connections_closed(&server).await;
}
