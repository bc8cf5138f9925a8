//! Raw-socket attacks of a real plan run, straight to the server (not through a client's
//! proxy): slowloris connections that trickle a request head, and floods of stream
//! requests held open.

use super::roster::Owned;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How much later than the header timeout a real server may close a slowloris
/// connection (the timer's granularity and a loaded machine).
pub const SLOWLORIS_SLACK: Duration = Duration::from_millis(500);

/// Sends part of a request head, then a byte every 300 ms; how long until the server
/// closed the connection (`None`: still open after `give_up`).
pub async fn trickle(addr: SocketAddr, give_up: Duration) -> Option<Duration> {
    let opened = Instant::now();
    let Ok(mut tcp) = TcpStream::connect(addr).await else { return Some(Duration::ZERO) };
    if tcp.write_all(b"GET /events?topic=t0 HTTP/1.1\r\nhost: x\r\n").await.is_err() {
        return Some(opened.elapsed());
    }
    let mut byte = [0u8; 64];
    while opened.elapsed() < give_up {
        tokio::select! {
            read = tcp.read(&mut byte) => if !matches!(read, Ok(n) if n > 0) { return Some(opened.elapsed()) },
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if tcp.write_all(b"x").await.is_err() {
                    return Some(opened.elapsed());
                }
            }
        }
    }
    None
}

/// How a flood's connections were answered.
#[derive(Debug, Default)]
pub struct Flooded {
    pub served: usize,
    pub refused: usize,
    /// Connected, no answer within two seconds (left in the backlog).
    pub waiting: usize,
    /// Could not even connect.
    pub failed: usize,
}

impl fmt::Display for Flooded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Flooded { served, refused, waiting, failed } = self;
        write!(f, "{served} served, {refused} refused with 503, {waiting} waiting, {failed} could not connect")
    }
}

/// Opens `connections` stream requests at once, holds every one until `until`, then
/// drops them all.
pub async fn flood(addr: SocketAddr, connections: usize, until: Instant) -> Flooded {
    let tasks: Vec<_> = (0..connections).map(|_| Owned::spawn(hold_stream(addr, until))).collect();
    let mut flooded = Flooded::default();
    for task in tasks {
        match task.await.ok().flatten() {
            Some(200) => flooded.served += 1,
            Some(503) => flooded.refused += 1,
            Some(_) => flooded.waiting += 1,
            None => flooded.failed += 1,
        }
    }
    flooded
}

/// One flood connection: the status it was answered with (0: none yet after two
/// seconds), read on until `until`.
async fn hold_stream(addr: SocketAddr, until: Instant) -> Option<u16> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    tcp.write_all(b"GET /events?topic=t0 HTTP/1.1\r\nhost: flood\r\n\r\n").await.ok()?;
    let mut head = [0u8; 12];
    let status = match tokio::time::timeout(Duration::from_secs(2), tcp.read_exact(&mut head)).await {
        Ok(Ok(_)) => std::str::from_utf8(&head[9..12]).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        _ => 0,
    };
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
    tokio::time::sleep_until(until).await;
    Some(status)
}
