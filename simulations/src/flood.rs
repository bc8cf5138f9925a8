//! The plan's `flood`: many stream requests opened at once from one host and held for a
//! while, then dropped. The server must keep serving its clients meanwhile and free every
//! flood connection after.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use crate::service::ServiceAddress;
use crate::trace::Trace;
use crate::SERVER_PORT;

/// One flood: when, how many connections, held how long.
pub type Flood = (Duration, usize, Duration);

/// Runs each flood in turn (they are sorted by start).
pub async fn run(server: ServiceAddress, floods: Vec<Flood>, trace: Trace) -> turmoil::Result {
    for (start, connections, hold) in floods {
        let now = turmoil::sim_elapsed().unwrap_or_default();
        tokio::time::sleep(start.saturating_sub(now)).await;
        // Sixteen connections a millisecond: turmoil panics when more connection requests
        // wait on a listener than its capacity (a real kernel's backlog drops them).
        let tasks: Vec<_> = (0..connections)
            .map(|n| {
                let after = Duration::from_millis(n as u64 / 16);
                tokio::task::spawn_local(hold_stream(server.host(), after, hold))
            })
            .collect();
        let mut served = 0;
        for task in tasks {
            served += usize::from(task.await.unwrap_or(false));
        }
        trace.here("flood", format_args!("{connections} connections held {hold:?}: {served} were streams"));
    }
    Ok(())
}

/// Opens a stream request `after` from now and reads it until `hold` from now; whether
/// the server answered 200.
async fn hold_stream(server: &'static str, after: Duration, hold: Duration) -> bool {
    let until = tokio::time::Instant::now() + hold;
    tokio::time::sleep(after).await;
    let Ok(mut tcp) = TcpStream::connect((server, SERVER_PORT)).await else { return false };
    if tcp.write_all(b"GET /events?topic=t0 HTTP/1.1\r\nhost: flood\r\n\r\n").await.is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        if head.len() < 12 {
            head.extend_from_slice(&buf[..n]);
        }
    }
    head.starts_with(b"HTTP/1.1 200")
}
