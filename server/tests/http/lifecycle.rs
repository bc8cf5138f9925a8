//! Lifecycle: heartbeats, timeouts against slow and dead peers, slow consumers, the
//! connection limit and graceful drain. Exact timings run on in-memory pipes under
//! paused tokio time; the rest on real loopback sockets.

use std::time::Duration;

use http::StatusCode;
use sse_server::metrics::DisconnectReason;
use sse_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{
    config, eventually, eventually_within, publish, publish_over, request, MemServer, Proto, StreamClient, TestServer,
    ALL_PROTOS, PATIENCE,
};

const ROOMY: usize = 1 << 20;

#[tokio::test(start_paused = true)]
async fn heartbeats_are_sent_only_after_a_whole_idle_interval() {
    let server = MemServer::start(config()); // heartbeat 15s
    let mut stream = StreamClient::over(server.connect(ROOMY), "/events?topic=t", None, Proto::Http1).await;
    stream.read_until(PATIENCE, |t| t.ends_with("\n\n")).await;
    // Busy: an event every 10s for a minute; a 15s heartbeat must never fire.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        publish_over(server.connect(ROOMY), "t", &format!("e{i}")).await;
        let chunk = stream.read_until(PATIENCE, |t| t.ends_with("\n\n")).await;
        assert!(chunk.starts_with("id: ") && chunk.contains(&format!("data: e{i}\n")), "event {i} got {chunk:?}");
    }
    // Idle: the heartbeat comes exactly one interval after the last event.
    let idle_since = Instant::now();
    let chunk = stream.next_chunk(Duration::from_secs(60)).await.expect("a heartbeat");
    assert_eq!(&chunk[..], b":\n\n");
    assert_eq!(idle_since.elapsed(), Duration::from_secs(15));
    let chunk = stream.next_chunk(Duration::from_secs(60)).await.expect("a second heartbeat");
    assert_eq!(&chunk[..], b":\n\n");
    assert_eq!(idle_since.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn slowloris_heads_are_closed_at_the_header_timeout() {
    let server = MemServer::start(config()); // header timeout 5s
    for trickle in [false, true] {
        let (mut reader, mut writer) = tokio::io::split(server.connect(ROOMY));
        let started = Instant::now();
        writer.write_all(b"GET /events?topic=t HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        // The trickling client sends a header byte every second: the bound is on the
        // whole head, not on silence.
        let trickler = async {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if trickle && writer.write_all(b"x").await.is_err() {
                    break;
                }
            }
            std::future::pending::<()>().await
        };
        let mut sink = Vec::new();
        tokio::select! {
            _ = reader.read_to_end(&mut sink) => {}
            _ = trickler => unreachable!(),
            _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("still open after 60s (trickle={trickle})"),
        }
        assert!(sink.is_empty(), "no answer to a head that never completed");
        assert_eq!(started.elapsed(), Duration::from_secs(5), "trickle={trickle}");
    }
    assert_eq!(server.metrics.disconnects_total(DisconnectReason::HeaderTimeout), 2);
    eventually("connections return to zero", || server.metrics.connections() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_reader_is_ended_at_the_write_timeout_while_others_keep_receiving() {
    let server = MemServer::start(config()); // write timeout 30s
    let stalled = StreamClient::over(server.connect(2048), "/events?topic=t", None, Proto::Http1).await;
    let mut fast = StreamClient::over(server.connect(ROOMY), "/events?topic=t", None, Proto::Http1).await.events();
    let big = "x".repeat(8 << 10);
    let first = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(publish_over(server.connect(ROOMY), "t", &big).await);
        let event = fast.next().await.expect("the fast reader is not held back");
        assert_eq!(event.id, *ids.last().unwrap());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eventually_within(Duration::from_secs(60), "the stalled stream is cut", || {
        server.metrics.disconnects_total(DisconnectReason::WriteTimeout) == 1
    })
    .await;
    let cut_after = first.elapsed();
    assert!(cut_after >= Duration::from_secs(30) && cut_after < Duration::from_secs(31), "cut after {cut_after:?}");
    assert_eq!(server.metrics.streams(), 1, "only the fast stream is left");
    drop(stalled);
}

#[tokio::test(start_paused = true)]
async fn drain_tells_every_stream_to_come_back_with_jitter_and_ends_within_the_drain_timeout() {
    let mut server = MemServer::start(Config { drain_timeout: Duration::from_secs(10), ..config() });
    let mut streams = Vec::new();
    for i in 0..6 {
        let proto = ALL_PROTOS[i % ALL_PROTOS.len()];
        let mut stream = StreamClient::over(server.connect(ROOMY), "/events?topic=t", None, proto).await;
        stream.read_until(PATIENCE, |t| t.ends_with("\n\n")).await;
        streams.push(stream);
    }
    // A reader that never reads holds its goodbye back; the drain must not wait past
    // its timeout for it.
    let stalled = StreamClient::over(server.connect(1024), "/events?topic=t", None, Proto::Http1).await;
    publish_over(server.connect(ROOMY), "t", &"y".repeat(4096)).await;
    for stream in &mut streams {
        stream.read_until(PATIENCE, |t| t.ends_with("\n\n")).await;
    }
    let started = Instant::now();
    server.begin_shutdown();
    let mut retries = Vec::new();
    for stream in &mut streams {
        let goodbye = stream.read_until(PATIENCE, |_| false).await;
        let retry: u64 = goodbye.strip_prefix("retry: ").and_then(|r| r.strip_suffix("\n\n")).unwrap().parse().unwrap();
        assert!((1000..=1500).contains(&retry), "retry {retry} outside [retry, retry + jitter]");
        retries.push(retry);
    }
    retries.sort();
    retries.dedup();
    assert!(retries.len() > 1, "jitter spreads the returns: {retries:?}");
    server.finished().await;
    assert_eq!(started.elapsed(), Duration::from_secs(10), "bounded by the drain timeout, not the stalled peer");
    drop(stalled);
}

#[tokio::test]
async fn a_stalled_tcp_reader_is_cut_and_fast_readers_get_every_event() {
    let config =
        Config { write_timeout: Duration::from_millis(300), window: 100_000, window_bytes: 1 << 30, ..config() };
    let server = TestServer::start(config).await;
    let stalled = StreamClient::open_small_window(server.addr, "/events?topic=t", Proto::Http1).await;
    let mut fast = StreamClient::open(server.addr, "/events?topic=t", None, Proto::Http1).await.events();
    let big = "z".repeat(60 << 10);
    let mut ids = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while server.metrics.disconnects_total(DisconnectReason::WriteTimeout) == 0 {
        assert!(Instant::now() < deadline && ids.len() < 2000, "the stalled reader was never cut");
        ids.push(publish(server.addr, "t", &big).await);
        let event = fast.next().await.expect("fast reader keeps receiving");
        assert_eq!(event.id, *ids.last().unwrap());
    }
    eventually("only the fast stream is left", || server.metrics.streams() == 1).await;
    drop(stalled);
}

#[tokio::test]
async fn a_slow_consumer_that_falls_out_of_the_window_is_disconnected_and_told_on_resume() {
    let config = Config { window: 8, write_timeout: Duration::from_secs(60), ..config() };
    let server = TestServer::start(config).await;
    let mut slow = StreamClient::open_small_window(server.addr, "/events?topic=t", Proto::Http1).await.events();
    // A reader that keeps reading, slower than events arrive.
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        while let Some(event) = slow.next_within(Duration::from_secs(5)).await {
            received.push(event.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        received
    });
    let body = "s".repeat(16 << 10);
    let mut ids = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while server.metrics.disconnects_total(DisconnectReason::SlowConsumer) == 0 {
        assert!(Instant::now() < deadline && ids.len() < 100_000, "the slow consumer was never detected");
        ids.push(publish(server.addr, "t", &body).await);
    }
    // What it did receive is a gap-free prefix of what was published.
    let received = reader.await.unwrap();
    assert!(!received.is_empty() && received.len() < ids.len());
    assert_eq!(received, ids[..received.len()], "no event skipped before the disconnect");
    // Resuming from its last id: the lost events are announced, never silently skipped.
    let mut resumed =
        StreamClient::open(server.addr, "/events?topic=t", received.last().map(String::as_str), Proto::Http1)
            .await
            .events();
    let reset = resumed.next().await.unwrap();
    assert_eq!((reset.event.as_str(), reset.data.as_str()), ("reset", r#"{"reason":"evicted"}"#));
    let retained: Vec<String> = resumed.take(8).await.into_iter().map(|e| e.id).collect();
    assert_eq!(retained, ids[ids.len() - 8..]);
}

#[tokio::test]
async fn past_the_connection_limit_clients_get_503_with_retry_after_and_service_recovers() {
    let server = TestServer::start(Config { max_connections: Some(2), ..config() }).await;
    let first = StreamClient::open(server.addr, "/events?topic=t", None, Proto::Http1).await;
    let _second = StreamClient::open(server.addr, "/events?topic=t", None, Proto::Http2).await;
    eventually("two connections", || server.metrics.connections() == 2).await;
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, third.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("\"error\":\"too_many_connections\""), "{answer}");
    assert_eq!(server.metrics.rejected_total("max_connections"), 1);
    drop(first);
    eventually("a slot frees up", || server.metrics.connections() == 1).await;
    let (status, _, _) = request(server.addr, "GET", "/healthz", "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn clients_that_leave_are_unregistered_and_counted() {
    let server = TestServer::start(config()).await;
    let mut streams = Vec::new();
    for i in 0..20 {
        let proto = ALL_PROTOS[i % ALL_PROTOS.len()];
        streams.push(
            StreamClient::open(server.addr, &format!("/events?topic=t{}&topic=shared", i % 3), None, proto).await,
        );
    }
    eventually("twenty streams", || server.metrics.streams() == 20).await;
    drop(streams);
    eventually("streams return to zero", || server.metrics.streams() == 0).await;
    eventually("connections return to zero", || server.metrics.connections() == 0).await;
    assert_eq!(server.metrics.disconnects_total(DisconnectReason::ClientClosed), 20);
    let (_, _, metrics) = request(server.addr, "GET", "/metrics", "").await;
    assert!(metrics.contains("\nsse_topics 0\n"), "topics without events or subscribers are forgotten:\n{metrics}");
}

#[tokio::test]
async fn readyz_turns_503_during_the_drain_for_connections_already_open() {
    let config = Config { write_timeout: Duration::from_secs(2), drain_timeout: Duration::from_secs(5), ..config() };
    let mut server = TestServer::start(config).await;
    // A keep-alive connection opened before the drain, as a load balancer's would be.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut probe, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let readyz = || {
        http::Request::get("/readyz").header("host", "x").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap()
    };
    assert_eq!(probe.send_request(readyz()).await.unwrap().status(), StatusCode::OK);
    // A stalled reader keeps the drain busy until its write times out.
    let _stalled = StreamClient::open_small_window(server.addr, "/events?topic=t", Proto::Http1).await;
    // Publish until its writer is stuck: delivered lags published and stays behind.
    for published in 1.. {
        assert!(published < 500, "the stalled reader never stalled the writer");
        publish(server.addr, "t", &"q".repeat(60 << 10)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if server.metrics.delivered_total() < server.metrics.published_total() {
            break;
        }
    }
    let started = Instant::now();
    server.begin_shutdown();
    eventually("draining", || started.elapsed() > Duration::from_millis(50)).await;
    probe.ready().await.expect("the kept-alive connection is still open during the drain");
    let answer = probe.send_request(readyz()).await.unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    assert!(TcpStream::connect(server.addr).await.is_err(), "no new connections once draining");
    let took = server.finished().await;
    assert!(took < Duration::from_secs(5), "drain took {took:?}");
}

/// A listener whose first accepts fail as they do when the process is out of file
/// descriptors; the server must back off (not spin) and keep serving.
struct ExhaustedListener {
    failures_left: usize,
    inner: crate::support::MemListener,
}

impl sse_server::Listener for ExhaustedListener {
    type Io = tokio::io::DuplexStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Io, std::net::SocketAddr)> {
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(std::io::Error::from_raw_os_error(24)); // EMFILE
        }
        self.inner.accept().await
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

#[tokio::test(start_paused = true)]
async fn accept_errors_back_off_are_counted_and_never_stop_the_server() {
    let (listener, connect) = crate::support::MemListener::new();
    let server = sse_server::Server::new(config());
    let metrics = server.metrics();
    let started = Instant::now();
    tokio::spawn(server.run(ExhaustedListener { failures_left: 6, inner: listener }, std::future::pending()));
    let (client, server_side) = tokio::io::duplex(ROOMY);
    connect.send(server_side).unwrap();
    let (status, _, _) = crate::support::request_over(client, "GET", "/healthz", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metrics.accept_errors_total(), 6);
    // 5 + 10 + 20 + 40 + 80 + 160 ms of backoff: no busy loop, no exit.
    assert_eq!(started.elapsed(), Duration::from_millis(315));
}

/// The library's entry point (`sse_server::run`, the seam simulations use) serves a
/// listener until its shutdown future completes, then returns.
#[tokio::test]
async fn the_library_entry_point_serves_until_its_shutdown_completes() {
    let listener = sse_server::listener::bind("127.0.0.1:0".parse().unwrap(), 128, false).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(sse_server::run(listener, config(), async {
        let _ = stopped.await;
    }));
    let id = tokio::time::timeout(PATIENCE, crate::support::publish(addr, "t", "x")).await.expect("it serves");
    assert!(!id.is_empty());
    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, served).await.expect("it returns after the shutdown").unwrap().unwrap();
}
