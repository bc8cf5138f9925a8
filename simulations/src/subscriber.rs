//! An EventSource-like subscriber on simulated TCP: follows `retry:`, resumes with
//! `Last-Event-ID`, treats a stream silent for three heartbeats as dead, and records
//! everything it sees for the oracle.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use turmoil::net::TcpStream;

pub use sse_plan::record::{Received, Seen};

use crate::link::Link;
use crate::service::ServiceAddress;
use crate::trace::Trace;
use crate::SERVER_PORT;
use sse_server::stream::wire::{find, Item, StreamDecoder};

/// Shared state between a subscriber and the harness.
#[derive(Debug, Default)]
pub struct SubscriberState {
    pub seen: RefCell<Vec<Seen>>,
    /// Stop reading until this simulated time (a stalled reader).
    pub stall_until: Cell<Duration>,
    /// Drop the connection at once (an abrupt disconnect); cleared by the subscriber.
    pub drop_now: Cell<bool>,
    /// The link closes after this many more bytes reach the subscriber (once): what a
    /// Toxiproxy `limit_data` does for real. Counted over the connection open when it is
    /// set, else over the next one; cleared when it fires.
    pub cut_after: Cell<Option<usize>>,
    pub connects: Cell<u32>,
    /// The faultable link its connections go through, when a link fault names it.
    pub link: Option<Rc<Link>>,
}

/// How the subscriber behaves.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    pub name: String,
    pub server: ServiceAddress,
    pub topics: Vec<String>,
    /// The server's heartbeat: three of them without a byte mean a dead stream.
    pub heartbeat: Duration,
    /// Clients start a few milliseconds apart: the simulated accept queue is small.
    pub start_after: Duration,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Runs until `stop` turns true.
pub async fn run(
    config: SubscriberConfig,
    state: Rc<SubscriberState>,
    trace: Trace,
    mut stop: watch::Receiver<bool>,
) -> turmoil::Result {
    let mut last_id: Option<String> = None;
    let mut retry = Duration::from_millis(1000);
    tokio::time::sleep(config.start_after).await;
    while !*stop.borrow() {
        let outcome = tokio::select! {
            biased;
            _ = stop.changed() => break,
            outcome = stream_once(&config, &state, &trace, &mut last_id, &mut retry) => outcome,
        };
        trace.here(&config.name, format_args!("stream ended: {outcome}; retry in {}ms", retry.as_millis()));
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tokio::time::sleep(retry) => {}
        }
    }
    Ok(())
}

/// Runs subscribers side by side on one host, each a task of its own, until all have
/// stopped; the first error, in client order, is the host's.
pub async fn run_all(
    subscribers: Vec<impl std::future::Future<Output = turmoil::Result> + 'static>,
) -> turmoil::Result {
    let tasks: Vec<_> = subscribers.into_iter().map(tokio::task::spawn_local).collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// A subscriber's connection: turmoil's, or the end of a [`Link`] carrying it.
trait Connection: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection for T {}

async fn stream_once(
    config: &SubscriberConfig,
    state: &SubscriberState,
    trace: &Trace,
    last_id: &mut Option<String>,
    retry: &mut Duration,
) -> String {
    let silence = config.heartbeat * 3;
    let host = config.server.host();
    let connect = tokio::time::timeout(silence, TcpStream::connect((host, SERVER_PORT)));
    let mut tcp: Box<dyn Connection> = match (connect.await, &state.link) {
        (Ok(Ok(tcp)), None) => Box::new(tcp),
        (Ok(Ok(tcp)), Some(link)) => Box::new(link.carry(tcp)),
        (Ok(Err(error)), _) => return format!("connect failed: {error}"),
        (Err(_), _) => return "connect timed out".into(),
    };
    let query: Vec<String> = config.topics.iter().map(|t| format!("topic={t}")).collect();
    let mut request = format!("GET /events?{} HTTP/1.1\r\nhost: {host}\r\n", query.join("&"));
    if let Some(id) = last_id.as_deref() {
        request += &format!("last-event-id: {id}\r\n");
    }
    request += "\r\n";
    if let Err(error) = tcp.write_all(request.as_bytes()).await {
        return format!("request failed: {error}");
    }
    state.connects.set(state.connects.get() + 1);
    trace.here(&config.name, format_args!("connected to {host}, last id {}", last_id.as_deref().unwrap_or("-")));
    let mut head = Vec::new();
    let mut head_done = false;
    let mut decoder = StreamDecoder::default();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if state.drop_now.replace(false) {
            return "dropped by the client".into();
        }
        let stalled_for = state.stall_until.get().saturating_sub(now());
        if !stalled_for.is_zero() {
            tokio::time::sleep(stalled_for).await;
            continue;
        }
        let n = match tokio::time::timeout(silence, tcp.read(&mut buf)).await {
            Err(_) => return "silent for three heartbeats".into(),
            Ok(Err(error)) => return format!("read failed: {error}"),
            Ok(Ok(0)) => return "closed by the server".into(),
            Ok(Ok(n)) => n,
        };
        // A cut delivers the bytes before it, then the link is gone (a half event is
        // never dispatched: the decoder only yields whole events).
        let (n, left, cut) = sse_plan::record::cut_step(state.cut_after.get(), n);
        state.cut_after.set(left);
        let fed = if head_done {
            feed(&mut decoder, &buf[..n], config, state, trace, last_id, retry)
        } else {
            head.extend_from_slice(&buf[..n]);
            let Some(end) = find(&head, b"\r\n\r\n") else {
                if cut {
                    return "cut by the link inside the response head".into();
                }
                continue;
            };
            if !head.starts_with(b"HTTP/1.1 200") {
                return format!("refused: {}", String::from_utf8_lossy(&head[..head.len().min(12)]));
            }
            head_done = true;
            let body = head.split_off(end + 4);
            feed(&mut decoder, &body, config, state, trace, last_id, retry)
        };
        if let Err(error) = fed {
            return error;
        }
        if cut {
            return "cut by the link".into();
        }
        if decoder.finished() {
            return "stream finished by the server".into();
        }
    }
}

fn feed(
    decoder: &mut StreamDecoder,
    bytes: &[u8],
    config: &SubscriberConfig,
    state: &SubscriberState,
    trace: &Trace,
    last_id: &mut Option<String>,
    retry: &mut Duration,
) -> Result<(), String> {
    for item in decoder.feed(bytes)? {
        match item {
            Item::Retry(ms) => *retry = Duration::from_millis(ms),
            Item::Position(id) => *last_id = Some(id),
            Item::Event { event, data, .. } if event == "reset" => {
                trace.here(&config.name, format_args!("reset {data}"));
                state.seen.borrow_mut().push(Seen::Reset { at: now(), reason: data });
            }
            Item::Event { id, data, .. } => {
                trace.here(&config.name, format_args!("event {id} {data}"));
                *last_id = Some(id.clone());
                state.seen.borrow_mut().push(Seen::Event(Received { at: now(), id, data }));
            }
        }
    }
    Ok(())
}
