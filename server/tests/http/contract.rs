//! The HTTP contract: stream headers, framing through an independent parser, both
//! protocols, and the documented answers to bad input.

use http::StatusCode;
use sse_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{config, publish, request, seq, Proto, StreamClient, TestServer, ALL_PROTOS, PATIENCE};

#[tokio::test]
async fn published_events_reach_subscribers_over_http1_and_http2() {
    let server = TestServer::start(config()).await;
    for proto in ALL_PROTOS {
        let stream = StreamClient::open(server.addr, "/events?topic=news", None, proto).await;
        assert_eq!(stream.status, StatusCode::OK, "{proto:?}");
        assert_eq!(stream.headers["content-type"], "text/event-stream", "{proto:?}");
        assert_eq!(stream.headers["cache-control"], "no-cache", "{proto:?}");
        assert_eq!(stream.headers["x-accel-buffering"], "no", "{proto:?}");
        let mut stream = stream;
        let opening = stream.read_until(PATIENCE, |t| t.matches("\n\n").count() == 2).await;
        let position = opening.strip_prefix("retry: 1000\n\nid: ").and_then(|rest| rest.strip_suffix("\n\n"));
        let position = position.unwrap_or_else(|| panic!("{proto:?}: retry:, then the position: {opening:?}"));
        let mut events = stream.events();
        let id = publish(server.addr, "news", "hello").await;
        let event = events.next().await.expect("the published event");
        assert_eq!((event.id.as_str(), event.data.as_str(), event.event.as_str()), (id.as_str(), "hello", "message"));
        assert_eq!(seq(position) + 1, seq(&id), "{proto:?}: the position is the last id before the stream");
        assert_eq!(position.split('-').next(), id.split('-').next());
    }
    let delivered = || server.metrics.delivered_total();
    crate::support::eventually("every delivery is counted", || delivered() == 3).await;
    assert_eq!(server.metrics.published_total(), 3);
}

/// A client that loses its stream before its first event resumes from the position the
/// stream opened with (an `id:` without data), so it misses nothing published meanwhile.
#[tokio::test]
async fn a_stream_lost_before_its_first_event_resumes_from_its_opening_position() {
    let server = TestServer::start(config()).await;
    publish(server.addr, "quiet", "before").await;
    let mut first = StreamClient::open(server.addr, "/events?topic=quiet", None, Proto::Http1).await;
    let opening = first.read_until(PATIENCE, |t| t.matches("\n\n").count() == 2).await;
    let position = opening.split("id: ").nth(1).and_then(|rest| rest.split('\n').next()).unwrap().to_owned();
    drop(first);
    publish(server.addr, "quiet", "while away 1").await;
    publish(server.addr, "quiet", "while away 2").await;
    let mut events =
        StreamClient::open(server.addr, "/events?topic=quiet", Some(&position), Proto::Http1).await.events();
    let got: Vec<String> = events.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["while away 1", "while away 2"]);
}

#[tokio::test]
async fn fresh_http1_streams_take_the_lean_path_in_origin_and_absolute_form() {
    let server = TestServer::start(config()).await;
    for target in ["/events?topic=t".to_owned(), format!("http://{}/events?topic=t", server.addr)] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(format!("GET {target} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut head = vec![0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut head)).await.unwrap().unwrap();
        let head = String::from_utf8_lossy(&head[..n]);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"), "{target}: {head}");
        // The lean path writes its own head; hyper's would carry a date header.
        assert!(!head.contains("date:"), "{target} went through hyper: {head}");
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    }
}

#[tokio::test]
async fn multi_line_and_unicode_data_round_trip_through_an_independent_parser() {
    let server = TestServer::start(config()).await;
    let mut events = StreamClient::open(server.addr, "/events?topic=t", None, Proto::Http1).await.events();
    let bodies = [
        "one line",
        "two\nlines",
        "crlf\r\nlines\r\n",
        "lone\rcarriage",
        "\n\nleading breaks",
        "",
        " leading space",
        "data: id: event: retry: look like fields",
        "ünïcödé ✓ 日本語 🚀",
        ":not a comment",
    ];
    for body in bodies {
        publish(server.addr, "t", body).await;
    }
    for body in bodies {
        let event = events.next().await.expect("every event arrives");
        let expected = body.replace("\r\n", "\n").replace('\r', "\n");
        assert_eq!(event.data, expected, "published {body:?}");
        assert_eq!(event.event, "message");
    }
}

#[tokio::test]
async fn event_type_is_carried_and_ids_increase() {
    let server = TestServer::start(config()).await;
    let mut events = StreamClient::open(server.addr, "/events?topic=t", None, Proto::Http1).await.events();
    let (status, _, body) = request(server.addr, "POST", "/events?topic=t&event=price.update", "1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body.starts_with("{\"id\":\"") && body.ends_with("\",\"topic\":\"t\"}"), "{body}");
    publish(server.addr, "t", "2").await;
    let got = events.take(2).await;
    assert_eq!(got[0].event, "price.update");
    assert_eq!(got[1].event, "message");
    assert!(crate::support::seq(&got[0].id) < crate::support::seq(&got[1].id));
}

#[tokio::test]
async fn bad_publish_inputs_get_the_documented_statuses() {
    let server = TestServer::start(Config { max_event_bytes: 1024, ..config() }).await;
    let cases: &[(&str, &str, Vec<u8>, u16, &str)] = &[
        ("POST", "/events", b"x".to_vec(), 400, "missing_topic"),
        ("POST", "/events?topic=a%20b", b"x".to_vec(), 400, "invalid_topic"),
        ("POST", &format!("/events?topic={}", "t".repeat(129)), b"x".to_vec(), 400, "invalid_topic"),
        ("POST", "/events?topic=t&event=a%0Ab", b"x".to_vec(), 400, "invalid_event_type"),
        ("POST", "/events?topic=t&event=a%0Db", b"x".to_vec(), 400, "invalid_event_type"),
        ("POST", "/events?topic=t&event=a%01b", b"x".to_vec(), 400, "invalid_event_type"),
        ("POST", &format!("/events?topic=t&event={}", "e".repeat(65)), b"x".to_vec(), 400, "invalid_event_type"),
        ("POST", "/events?topic=t", vec![0xff, 0xfe], 400, "invalid_utf8"),
        ("POST", "/events?topic=t", vec![b'x'; 1025], 413, "payload_too_large"),
        ("POST", "/events?topic=t&topic=u", b"x".to_vec(), 400, "too_many_topics"),
        ("GET", "/nope", Vec::new(), 404, "not_found"),
        ("PUT", "/events?topic=t", Vec::new(), 405, "method_not_allowed"),
        ("DELETE", "/healthz", Vec::new(), 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, headers, text) = request(server.addr, method, path, body.clone()).await;
        assert_eq!(got.as_u16(), *status, "{method} {path}: {text}");
        assert_eq!(headers["content-type"], "application/json", "{method} {path}");
        assert!(text.starts_with(&format!("{{\"error\":\"{code}\",\"message\":\"")), "{method} {path}: {text}");
    }
    let (_, headers, _) = request(server.addr, "PUT", "/events?topic=t", "").await;
    assert_eq!(headers["allow"], "GET, POST, OPTIONS");
    // A body of exactly the limit is accepted: the bound is inclusive.
    let (status, _, _) = request(server.addr, "POST", "/events?topic=t", vec![b'x'; 1024]).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn oversized_chunked_body_without_length_gets_413() {
    let server = TestServer::start(Config { max_event_bytes: 100, ..config() }).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let chunk = "x".repeat(80);
    let req = format!(
        "POST /events?topic=t HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n50\r\n{chunk}\r\n50\r\n{chunk}\r\n0\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn bad_subscribe_requests_get_400_on_both_paths() {
    let server = TestServer::start(config()).await;
    for path in ["/events", "/events?topic=bad%20topic", "/events?topic=%ZZ"] {
        for proto in ALL_PROTOS {
            let stream = StreamClient::open(server.addr, path, None, proto).await;
            assert_eq!(stream.status, StatusCode::BAD_REQUEST, "{proto:?} {path}");
        }
    }
    let many: Vec<String> = (0..17).map(|i| format!("topic=t{i}")).collect();
    let stream = StreamClient::open(server.addr, &format!("/events?{}", many.join("&")), None, Proto::Http1).await;
    assert_eq!(stream.status, StatusCode::BAD_REQUEST);
    let sixteen: Vec<String> = (0..16).map(|i| format!("topic=t{i}")).collect();
    let stream = StreamClient::open(server.addr, &format!("/events?{}", sixteen.join("&")), None, Proto::Http1).await;
    assert_eq!(stream.status, StatusCode::OK, "16 topics are allowed");
}

#[tokio::test]
async fn malformed_and_oversized_request_heads_are_answered_and_closed() {
    let server = TestServer::start(config()).await;
    let huge = format!("GET /events?topic=t HTTP/1.1\r\nx-pad: {}\r\n\r\n", "p".repeat(20_000));
    let too_many: String = (0..70).map(|i| format!("x-h{i}: v\r\n")).collect();
    let too_many = format!("GET /healthz HTTP/1.1\r\n{too_many}\r\n");
    for (raw, status) in [("NOT HTTP AT ALL\r\n\r\n".to_owned(), "400"), (huge, "431"), (too_many, "431")] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let _ = tcp.write_all(raw.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await.expect("the server closes");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
    }
    crate::support::eventually("connections return to zero", || server.metrics.connections() == 0).await;
}

/// The stream and subscription gauges count what is open on every path, and come back
/// to zero when the clients go.
#[tokio::test]
async fn stream_and_subscription_gauges_follow_the_clients() {
    let server = TestServer::start(config()).await;
    let mut clients = Vec::new();
    for proto in ALL_PROTOS {
        clients.push(StreamClient::open(server.addr, "/events?topic=a&topic=b&topic=c", None, proto).await);
    }
    crate::support::eventually("three streams on three topics each", || {
        server.metrics.streams() == 3 && server.metrics.subscriptions() == 9
    })
    .await;
    drop(clients);
    crate::support::eventually("no stream and no subscription left", || {
        server.metrics.streams() == 0 && server.metrics.subscriptions() == 0
    })
    .await;
}

#[tokio::test]
async fn health_readiness_metrics_and_console_page_answer() {
    let server = TestServer::start(config()).await;
    let (status, _, _) = request(server.addr, "GET", "/healthz", "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = request(server.addr, "GET", "/readyz", "").await;
    assert_eq!(status, StatusCode::OK);
    publish(server.addr, "t", "x").await;
    let (status, _, text) = request(server.addr, "GET", "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "sse_streams ",
        "sse_connections ",
        "sse_events_published_total 1",
        "sse_events_delivered_total ",
        "sse_buffered_bytes ",
        "sse_accept_errors_total ",
        "process_open_fds ",
        "process_resident_memory_bytes ",
        "tokio_alive_tasks ",
    ] {
        assert!(text.contains(name), "{name:?} missing from\n{text}");
    }
    let (status, headers, page) = request(server.addr, "GET", "/", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.contains("new EventSource("));
}

/// With publish tokens configured, only `Authorization: Bearer <token>` publishes: 401
/// with `WWW-Authenticate` otherwise, and the answer never echoes a token. Streams stay
/// open to all.
#[tokio::test]
async fn with_publish_tokens_only_a_bearer_of_one_may_publish() {
    let tokens = vec!["first-token".parse().unwrap(), "second-token".parse().unwrap()];
    let server = TestServer::start(Config { publish_tokens: tokens, ..config() }).await;
    let post = |auth: Option<&'static str>| async move {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let auth = auth.map(|a| format!("authorization: {a}\r\n")).unwrap_or_default();
        let request = format!(
            "POST /events?topic=t HTTP/1.1\r\nhost: x\r\n{auth}content-length: 5\r\nconnection: close\r\n\r\nhello"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(PATIENCE, tcp.read_to_string(&mut answer)).await.unwrap().unwrap();
        answer
    };
    let missing = [None, Some("first-token"), Some("Basic Zmlyc3QtdG9rZW4=")];
    let wrong = [Some("Bearer wrong-token"), Some("Bearer first-toke")];
    for (refused, code, challenge) in missing
        .map(|m| (m, "unauthorized", "Bearer"))
        .into_iter()
        .chain(wrong.map(|w| (w, "invalid_token", "Bearer error=\"invalid_token\"")))
    {
        let answer = post(refused).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{refused:?}: {answer}");
        assert!(answer.contains(&format!("www-authenticate: {challenge}\r\n")), "{answer}");
        assert!(answer.contains(&format!("\"error\":\"{code}\"")), "{answer}");
        assert!(!answer.contains("-toke"), "no token is echoed: {answer}");
    }
    for accepted in ["Bearer first-token", "Bearer second-token"] {
        let answer = post(Some(accepted)).await;
        assert!(answer.starts_with("HTTP/1.1 201"), "{accepted}: {answer}");
    }
    let stream = StreamClient::open(server.addr, "/events?topic=t", None, Proto::Http1).await;
    assert_eq!(stream.status, StatusCode::OK, "subscribing needs no token");
}
