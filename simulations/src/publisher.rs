//! The simulated publisher: one event at a time, each on a fresh connection, recording
//! every acknowledgement. An attempt that gets no answer is retried (up to
//! [`ATTEMPTS`] times) under the same `Idempotency-Key`, so a retry of an event that was
//! stored after all gets its first id back instead of storing a duplicate.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use sse_server::rng::SeededRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

pub use sse_plan::record::Acked;

use crate::service::ServiceAddress;
use crate::trace::Trace;
use crate::SERVER_PORT;
use sse_server::stream::wire::find;

/// What the publisher does.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub server: ServiceAddress,
    pub topics: Vec<String>,
    pub start: Duration,
    pub stop: Duration,
    pub interval: Duration,
    pub seed: u64,
    /// Appended to each event's data (the plan's `event_bytes`).
    pub padding: String,
}

/// Tries per event.
pub const ATTEMPTS: usize = 3;

/// Publishes from `start` to `stop`, every `interval`.
pub async fn run(config: PublisherConfig, acked: Rc<RefCell<Vec<Acked>>>, trace: Trace) -> turmoil::Result {
    let rng = SeededRng::new(config.seed);
    tokio::time::sleep(config.start).await;
    let mut attempt = 0u64;
    while turmoil::sim_elapsed().unwrap_or_default() < config.stop {
        let topic = &config.topics[rng.up_to(config.topics.len() as u64 - 1) as usize];
        let name = format!("{topic}#{attempt}");
        let data = format!("{name}{}", config.padding);
        attempt += 1;
        let sent = turmoil::sim_elapsed().unwrap_or_default();
        for _ in 0..ATTEMPTS {
            match tokio::time::timeout(Duration::from_secs(2), publish(config.server.host(), topic, &name, &data)).await
            {
                Ok(Ok(id)) => {
                    trace.here("publisher", format_args!("acked {id} {name}"));
                    let at = turmoil::sim_elapsed().unwrap_or_default();
                    acked.borrow_mut().push(Acked { at, sent, id, topic: topic.clone(), data });
                    break;
                }
                Ok(Err(error)) => trace.here("publisher", format_args!("failed {name}: {error}")),
                Err(_) => trace.here("publisher", format_args!("timed out {name}")),
            }
            if turmoil::sim_elapsed().unwrap_or_default() >= config.stop {
                break;
            }
        }
        tokio::time::sleep(config.interval).await;
    }
    Ok(())
}

async fn publish(server: &str, topic: &str, key: &str, data: &str) -> Result<String, String> {
    let mut tcp = TcpStream::connect((server, SERVER_PORT)).await.map_err(|e| e.to_string())?;
    let request = format!(
        "POST /events?topic={topic} HTTP/1.1\r\nhost: {server}\r\nidempotency-key: {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{data}",
        data.len()
    );
    tcp.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 201") {
        return Err(format!("answered {}", text.lines().next().unwrap_or("nothing")));
    }
    let body = &answer[find(&answer, b"\r\n\r\n").ok_or("no body")? + 4..];
    let body = String::from_utf8_lossy(body);
    let id = body.split("\"id\":\"").nth(1).and_then(|r| r.split('"').next()).ok_or("no id")?;
    Ok(id.to_owned())
}
