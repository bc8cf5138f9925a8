//! An EventSource-like client over raw TCP for real runs: HTTP/1.1 chunked decoding, SSE
//! fields, the server's `retry:`, resume with `Last-Event-ID` (from events and from the
//! stream's opening position), and a stream silent for three heartbeats treated as dead.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

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
    pub connects: u32,
    /// Why each stream ended.
    pub ends: Vec<String>,
}

/// Shared view of a subscriber's record.
pub type Shared = Arc<Mutex<Record>>;

/// Follows `topic` through `addr` until `stop` turns true, reconnecting as a browser
/// would.
pub async fn run(
    addr: SocketAddr,
    topic: String,
    heartbeat: Duration,
    record: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_id: Option<String> = None;
    let mut retry = Duration::from_millis(500);
    while !*stop.borrow() {
        let ended = tokio::select! {
            ended = stream_once(addr, &topic, heartbeat, &record, &mut last_id, &mut retry) => ended,
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
    topic: &str,
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
    let mut request = format!("GET /events?topic={topic} HTTP/1.1\r\nhost: chaos\r\n");
    if let Some(id) = last_id.as_deref() {
        request += &format!("last-event-id: {id}\r\n");
    }
    request += "\r\n";
    if let Err(error) = tcp.write_all(request.as_bytes()).await {
        return format!("request failed: {error}");
    }
    record.lock().unwrap().connects += 1;
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match tokio::time::timeout(silence, tcp.read(&mut buf)).await {
            Err(_) => return "silent for three heartbeats".into(),
            Ok(Err(error)) => return format!("read failed: {error}"),
            Ok(Ok(0)) => return "closed by the server".into(),
            Ok(Ok(n)) => n,
        };
        let items = match decoder.feed(&buf[..n]) {
            Ok(items) => items,
            Err(error) => return format!("bad stream: {error}"),
        };
        let mut record = record.lock().unwrap();
        for item in items {
            match item {
                Item::Retry(ms) => *retry = Duration::from_millis(ms),
                Item::Position(id) => *last_id = Some(id),
                Item::Event { event, data, .. } if event == "reset" => record.resets.push(data),
                Item::Event { id, data, .. } => {
                    *last_id = Some(id.clone());
                    record.events.push(Received { id, data, at: Instant::now() });
                }
            }
        }
        if decoder.finished {
            return "stream finished by the server".into();
        }
    }
}

/// One dispatched item.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Event {
        id: String,
        event: String,
        data: String,
    },
    Retry(u64),
    /// An `id:` block without data: the stream's position.
    Position(String),
}

/// Response head, chunked coding and SSE fields, fed as bytes arrive.
#[derive(Debug, Default)]
struct Decoder {
    raw: Vec<u8>,
    head_done: bool,
    chunk_left: Option<usize>,
    finished: bool,
    text: Vec<u8>,
    id: String,
    id_in_block: bool,
    event: String,
    data: Option<String>,
}

impl Decoder {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Item>, String> {
        self.raw.extend_from_slice(bytes);
        if !self.head_done {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(Vec::new()) };
            if !self.raw.starts_with(b"HTTP/1.1 200") {
                return Err(String::from_utf8_lossy(&self.raw[..end]).into_owned());
            }
            self.raw.drain(..end + 4);
            self.head_done = true;
        }
        // Bytes after the last chunk (its trailer) carry no events.
        while !self.finished {
            match self.chunk_left {
                None => {
                    let Some(end) = self.raw.windows(2).position(|w| w == b"\r\n") else { break };
                    let size =
                        std::str::from_utf8(&self.raw[..end]).ok().and_then(|s| usize::from_str_radix(s, 16).ok());
                    let size = size.ok_or("bad chunk size")?;
                    self.raw.drain(..end + 2);
                    if size == 0 {
                        self.finished = true;
                        break;
                    }
                    self.chunk_left = Some(size);
                }
                Some(left) => {
                    if self.raw.len() < left + 2 {
                        break;
                    }
                    self.text.extend(self.raw.drain(..left));
                    self.raw.drain(..2);
                    self.chunk_left = None;
                }
            }
        }
        self.lines()
    }

    fn lines(&mut self) -> Result<Vec<Item>, String> {
        let mut items = Vec::new();
        while let Some(end) = self.text.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.text.drain(..=end).collect();
            let line = std::str::from_utf8(&line[..end]).map_err(|_| "a line that is not UTF-8")?;
            if line.is_empty() {
                if let Some(mut data) = self.data.take() {
                    data.pop();
                    items.push(Item::Event { id: self.id.clone(), event: std::mem::take(&mut self.event), data });
                } else if self.id_in_block {
                    items.push(Item::Position(self.id.clone()));
                }
                self.event.clear();
                self.id_in_block = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => {
                    self.id = value.to_owned();
                    self.id_in_block = true;
                }
                "event" => self.event = value.to_owned(),
                "data" => {
                    let data = self.data.get_or_insert_with(String::new);
                    data.push_str(value);
                    data.push('\n');
                }
                "retry" => {
                    if let Ok(ms) = value.parse() {
                        items.push(Item::Retry(ms));
                    }
                }
                _ => {}
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_head_chunks_and_fields_split_anywhere() {
        let body: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nc\r\nretry: 500\n\n\r\n9\r\nid: 1-0\n\n\r\n11\r\nid: 1-1\ndata: a\n\n\r\n0\r\n\r\n";
        for split in 1..body.len() {
            let mut decoder = Decoder::default();
            let mut items = decoder.feed(&body[..split]).unwrap();
            items.extend(decoder.feed(&body[split..]).unwrap());
            let event = Item::Event { id: "1-1".into(), event: String::new(), data: "a".into() };
            assert_eq!(items, [Item::Retry(500), Item::Position("1-0".into()), event], "split at {split}");
            assert!(decoder.finished);
        }
    }
}
