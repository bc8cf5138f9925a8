//! Shared helpers: a server on an ephemeral loopback port, a publisher, and stream
//! clients built on hyper's client and the independent `eventsource-stream` parser.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sse_server::metrics::Metrics;
use sse_server::{Config, Server};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long any wait in these tests may take before it counts as a failure.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Defaults for tests: a fixed seed and timeouts short enough to observe.
pub fn config() -> Config {
    Config {
        seed: Some(1),
        retry: Duration::from_millis(1000),
        retry_jitter: Duration::from_millis(500),
        ..Config::default()
    }
}

/// A server running in this test's runtime on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        TestServer::start_server(Server::new(config)).await
    }

    /// Runs an already built server (on a store of the test's choosing).
    pub async fn start_server(server: Server) -> TestServer {
        let listener = sse_server::listener::bind("127.0.0.1:0".parse().unwrap(), 128, false).unwrap();
        let addr = listener.local_addr().unwrap();
        let (metrics, stop, task) = spawn_server(listener, server);
        TestServer { addr, metrics, stop: Some(stop), task }
    }

    /// Starts the drain; `finished` waits for `run` to return.
    pub fn begin_shutdown(&mut self) {
        let _ = self.stop.take().expect("shutdown once").send(());
    }

    /// Waits for `run` to return and says how long it took.
    pub async fn finished(self) -> Duration {
        let started = Instant::now();
        tokio::time::timeout(PATIENCE * 6, self.task).await.expect("run returned").unwrap().unwrap();
        started.elapsed()
    }
}

/// Runs a server on `listener` in this test's runtime; it drains when `stop` is sent.
fn spawn_server<L: sse_server::Listener>(
    listener: L,
    server: Server,
) -> (Arc<Metrics>, oneshot::Sender<()>, JoinHandle<std::io::Result<()>>) {
    let metrics = server.metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    (metrics, stop, task)
}

/// Waits until `condition` holds, failing the test after `PATIENCE`.
pub async fn eventually(what: &str, condition: impl FnMut() -> bool) {
    eventually_within(PATIENCE, what, condition).await
}

/// Waits until `condition` holds, failing the test after `patience`.
pub async fn eventually_within(patience: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One request on a fresh HTTP/1.1 connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, String) {
    request_over(TcpStream::connect(addr).await.unwrap(), method, path_and_query, body).await
}

/// One request over any byte stream.
pub async fn request_over<S>(
    io: S,
    method: &str,
    path_and_query: &str,
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    request_with(io, method, path_and_query, &[], body).await
}

/// One HTTP/1.1 request carrying `headers`, over any byte stream.
pub async fn request_with<S>(
    io: S,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(connection);
    let mut req = Request::builder().method(method).uri(path_and_query).header("host", "localhost");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let response = sender.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// Publishes and returns the acknowledged id.
pub async fn publish(addr: SocketAddr, topic: &str, data: &str) -> String {
    publish_over(TcpStream::connect(addr).await.unwrap(), topic, data).await
}

/// Publishes over any byte stream and returns the acknowledged id.
pub async fn publish_over<S>(io: S, topic: &str, data: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (status, _, body) = request_over(io, "POST", &format!("/events?topic={topic}"), data.to_owned()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next()).expect("an id in the answer");
    id.to_owned()
}

/// Which protocol a stream client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// A fresh HTTP/1.1 connection: the server's lean stream path.
    Http1,
    /// A stream requested after another request on the same HTTP/1.1 connection: the
    /// hyper path.
    Http1KeptAlive,
    /// HTTP/2 prior knowledge: the hyper path.
    Http2,
}

/// Every way a client can reach an event stream.
pub const ALL_PROTOS: [Proto; 3] = [Proto::Http1, Proto::Http1KeptAlive, Proto::Http2];

type RawBody = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// An open `GET /events` response.
pub struct StreamClient {
    pub status: StatusCode,
    pub headers: HeaderMap,
    raw: RawBody,
}

impl StreamClient {
    pub async fn open(
        addr: SocketAddr,
        path_and_query: &str,
        last_event_id: Option<&str>,
        proto: Proto,
    ) -> StreamClient {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Self::over(tcp, path_and_query, last_event_id, proto).await
    }

    /// Opens a stream over TCP with a small receive buffer, so that not reading soon
    /// stalls the server's writes.
    pub async fn open_small_window(addr: SocketAddr, path_and_query: &str, proto: Proto) -> StreamClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        Self::over(tcp, path_and_query, None, proto).await
    }

    /// Opens a stream over any byte stream (TCP or an in-memory duplex).
    pub async fn over<S>(io: S, path_and_query: &str, last_event_id: Option<&str>, proto: Proto) -> StreamClient
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let headers: Vec<(&str, &str)> = last_event_id.map(|id| ("last-event-id", id)).into_iter().collect();
        Self::with_headers(io, path_and_query, &headers, proto).await
    }

    /// Opens a stream whose request carries `headers`.
    pub async fn with_headers<S>(io: S, path_and_query: &str, headers: &[(&str, &str)], proto: Proto) -> StreamClient
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // HTTP/1.1 clients send the origin form (`/events?…`); HTTP/2 needs the scheme
        // and authority.
        let uri = match proto {
            Proto::Http2 => format!("http://localhost{path_and_query}"),
            Proto::Http1 | Proto::Http1KeptAlive => path_and_query.to_owned(),
        };
        let mut req = Request::builder().uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
        let response = match proto {
            Proto::Http1 => {
                let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
                tokio::spawn(connection);
                sender.send_request(req).await.unwrap()
            }
            Proto::Http1KeptAlive => {
                let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
                tokio::spawn(connection);
                let health = Request::get("/healthz").header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
                let answer = sender.send_request(health).await.unwrap();
                assert_eq!(answer.status(), StatusCode::OK);
                answer.into_body().collect().await.unwrap();
                sender.ready().await.unwrap();
                sender.send_request(req).await.unwrap()
            }
            Proto::Http2 => {
                let (mut sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
                tokio::spawn(connection);
                sender.send_request(req).await.unwrap()
            }
        };
        let (parts, body) = response.into_parts();
        let raw =
            body.into_data_stream().take_while(|chunk| std::future::ready(chunk.is_ok())).map(|chunk| chunk.unwrap());
        StreamClient { status: parts.status, headers: parts.headers, raw: Box::pin(raw) }
    }

    /// Parses the rest of the stream with the independent parser.
    pub fn events(self) -> Events {
        Events { inner: Box::pin(self.raw.map(Ok::<_, std::convert::Infallible>).eventsource()) }
    }

    /// Raw body bytes until `until` holds for everything read so far (or the stream ends).
    pub async fn read_until(&mut self, within: Duration, until: impl Fn(&str) -> bool) -> String {
        let mut text = String::new();
        let _ = tokio::time::timeout(within, async {
            while !until(&text) {
                match self.raw.next().await {
                    Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
                    None => break,
                }
            }
        })
        .await;
        text
    }

    /// The next raw chunk, if one comes within `within`.
    pub async fn next_chunk(&mut self, within: Duration) -> Option<Bytes> {
        tokio::time::timeout(within, self.raw.next()).await.ok().flatten()
    }
}

type EventResult = Result<Event, eventsource_stream::EventStreamError<std::convert::Infallible>>;

/// Events as a spec-compliant client sees them.
pub struct Events {
    inner: Pin<Box<dyn Stream<Item = EventResult> + Send>>,
}

impl Events {
    /// The next event, or `None` if the stream ends or stays quiet for `PATIENCE`.
    pub async fn next(&mut self) -> Option<Event> {
        self.next_within(PATIENCE).await
    }

    pub async fn next_within(&mut self, within: Duration) -> Option<Event> {
        match tokio::time::timeout(within, self.inner.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            Ok(Some(Err(error))) => panic!("stream parse error: {error}"),
            Ok(None) | Err(_) => None,
        }
    }

    /// The next `n` events; fails the test if they do not all arrive.
    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let event = self.next().await.unwrap_or_else(|| panic!("event {i} of {n} did not arrive"));
            out.push(event);
        }
        out
    }
}

/// The sequence part of an id (`<epoch>-<seq>`), for order checks.
pub fn seq(id: &str) -> u64 {
    id.rsplit('-').next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not an id: {id:?}"))
}

/// A listener fed by in-memory duplex pipes: with paused tokio time, timeouts are exact.
pub struct MemListener {
    incoming: tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
}

impl MemListener {
    /// A listener and the sender that makes connections to it.
    pub fn new() -> (MemListener, tokio::sync::mpsc::UnboundedSender<tokio::io::DuplexStream>) {
        let (connect, incoming) = tokio::sync::mpsc::unbounded_channel();
        (MemListener { incoming }, connect)
    }
}

impl sse_server::Listener for MemListener {
    type Io = tokio::io::DuplexStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Io, SocketAddr)> {
        match self.incoming.recv().await {
            Some(io) => Ok((io, "127.0.0.1:1".parse().unwrap())),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok("127.0.0.1:0".parse().unwrap())
    }
}

/// A server on a [`MemListener`].
pub struct MemServer {
    pub metrics: Arc<Metrics>,
    connect: tokio::sync::mpsc::UnboundedSender<tokio::io::DuplexStream>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl MemServer {
    pub fn start(config: Config) -> MemServer {
        let (listener, connect) = MemListener::new();
        let (metrics, stop, task) = spawn_server(listener, Server::new(config));
        MemServer { metrics, connect, stop: Some(stop), task }
    }

    /// A new connection whose pipe holds at most `capacity` bytes each way.
    pub fn connect(&self, capacity: usize) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(capacity);
        self.connect.send(server).unwrap();
        client
    }

    pub fn begin_shutdown(&mut self) {
        let _ = self.stop.take().expect("shutdown once").send(());
    }

    pub async fn finished(self) {
        tokio::time::timeout(Duration::from_secs(600), self.task).await.expect("run returned").unwrap().unwrap();
    }
}
