//! An EventSource-like client over raw TCP for real runs: the response head, then the
//! shared stream decoder (`sse_server::wire`), the server's `retry:`, resume with `Last-Event-ID` (from events and from the
//! stream's opening position), and a stream silent for three heartbeats treated as dead.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sse_server::stream::wire::{find, Item, StreamDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use sse_plan::record::Seen;

/// An event as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub data: String,
    pub at: Instant,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Record {
    pub events: Vec<Received>,
    /// Reset notices (their data).
    pub resets: Vec<String>,
    /// For each reset notice: how many events had arrived before it, and when it came.
    pub reset_positions: Vec<(usize, Instant)>,
    pub connects: u32,
    /// The opening position of the first stream that reached it, and when it arrived:
    /// the client is owed every event after it.
    pub opened_at: Option<(String, Instant)>,
    /// Why each stream ended.
    pub ends: Vec<String>,
    /// Read nothing until then (a stalled reader; the plan's `stall`).
    pub stall_until: Option<Instant>,
    /// Close the connection after this many more bytes arrive (once; the plan's `cut`),
    /// as the simulated subscriber does.
    pub cut_after: Option<usize>,
}

impl Record {
    /// Events and reset notices in arrival order, timed from `origin`, for the oracle.
    pub fn seen(&self, origin: Instant) -> Vec<Seen> {
        let since = |at: Instant| at.saturating_duration_since(origin);
        let mut resets = self.resets.iter().zip(&self.reset_positions).peekable();
        let mut seen = Vec::with_capacity(self.events.len() + self.resets.len());
        for (index, event) in self.events.iter().enumerate() {
            while let Some((reason, (_, at))) = resets.next_if(|(_, (before, _))| *before <= index) {
                seen.push(Seen::Reset { at: since(*at), reason: reason.clone() });
            }
            seen.push(Seen::Event(sse_plan::record::Received {
                at: since(event.at),
                id: event.id.clone(),
                data: event.data.clone(),
            }));
        }
        for (reason, (_, at)) in resets {
            seen.push(Seen::Reset { at: since(*at), reason: reason.clone() });
        }
        seen
    }
}

/// Shared view of a subscriber's record.
pub type Shared = Arc<Mutex<Record>>;

/// Follows `topics` through `addr` until `stop` turns true, reconnecting as a browser
/// would.
pub async fn run(
    addr: SocketAddr,
    topics: Vec<String>,
    heartbeat: Duration,
    record: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_id: Option<String> = None;
    let mut retry = Duration::from_millis(500);
    while !*stop.borrow() {
        let ended = tokio::select! {
            ended = stream_once(addr, &topics, heartbeat, &record, &mut last_id, &mut retry) => ended,
            _ = stop.changed() => return,
        };
        record.lock().unwrap().ends.push(ended);
        tokio::select! {
            _ = tokio::time::sleep(retry.min(Duration::from_secs(2))) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn stream_once(
    addr: SocketAddr,
    topics: &[String],
    heartbeat: Duration,
    record: &Shared,
    last_id: &mut Option<String>,
    retry: &mut Duration,
) -> String {
    let silence = heartbeat * 3;
    let mut tcp = match tokio::time::timeout(silence, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => return format!("connect failed: {error}"),
        Err(_) => return "connect timed out".into(),
    };
    let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    let mut request = format!("GET /events?{} HTTP/1.1\r\nhost: chaos\r\n", query.join("&"));
    if let Some(id) = last_id.as_deref() {
        request += &format!("last-event-id: {id}\r\n");
    }
    request += "\r\n";
    if let Err(error) = tcp.write_all(request.as_bytes()).await {
        return format!("request failed: {error}");
    }
    record.lock().unwrap().connects += 1;
    let mut decoder = StreamDecoder::default();
    // The response head, until it is whole.
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let stalled = record.lock().unwrap().stall_until.filter(|until| *until > Instant::now());
        if let Some(until) = stalled {
            tokio::time::sleep_until(until).await;
            continue;
        }
        let n = match tokio::time::timeout(silence, tcp.read(&mut buf)).await {
            Err(_) => return "silent for three heartbeats".into(),
            Ok(Err(error)) => return format!("read failed: {error}"),
            Ok(Ok(0)) => return "closed by the server".into(),
            Ok(Ok(n)) => n,
        };
        // A cut keeps the bytes before it and closes the link; the decoder never yields
        // the half event the cut leaves.
        let (n, cut) = {
            let mut record = record.lock().unwrap();
            let (keep, left, cut) = sse_plan::record::cut_step(record.cut_after, n);
            record.cut_after = left;
            (keep, cut)
        };
        let fed = match head.as_mut() {
            None => decoder.feed(&buf[..n]),
            Some(partial) => {
                partial.extend_from_slice(&buf[..n]);
                let Some(end) = find(partial, b"\r\n\r\n") else {
                    if cut {
                        return "cut inside the response head".into();
                    }
                    continue;
                };
                if !partial.starts_with(b"HTTP/1.1 200") {
                    return format!("refused: {}", String::from_utf8_lossy(&partial[..end]));
                }
                let body = partial.split_off(end + 4);
                head = None;
                decoder.feed(&body)
            }
        };
        let items = match fed {
            Ok(items) => items,
            Err(error) => return format!("bad stream: {error}"),
        };
        let mut record = record.lock().unwrap();
        for item in items {
            match item {
                Item::Retry(ms) => *retry = Duration::from_millis(ms),
                Item::Position(id) => {
                    record.opened_at.get_or_insert_with(|| (id.clone(), Instant::now()));
                    *last_id = Some(id);
                }
                Item::Event { event, data, .. } if event == "reset" => {
                    let position = (record.events.len(), Instant::now());
                    record.reset_positions.push(position);
                    record.resets.push(data);
                }
                Item::Event { id, data, .. } => {
                    *last_id = Some(id.clone());
                    record.events.push(Received { id, data, at: Instant::now() });
                }
            }
        }
        if cut {
            return "cut by the client after its byte budget".into();
        }
        if decoder.finished() {
            return "stream finished by the server".into();
        }
    }
}
