//! Slowloris clients: open connections, send part of a request head, trickle a byte a
//! second, and record how long the server took to close each one.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use crate::service::ServiceAddress;
use crate::trace::Trace;
use crate::SERVER_PORT;

/// For each connection: when its attack started, and how long it stayed open (`None`:
/// still open when the attacker gave up).
pub type Held = Rc<RefCell<Vec<(Duration, Option<Duration>)>>>;

/// At each `(start, connections)`, opens that many trickling connections.
pub async fn run(server: ServiceAddress, attacks: Vec<(Duration, usize)>, held: Held, trace: Trace) -> turmoil::Result {
    for (start, connections) in attacks {
        let now = turmoil::sim_elapsed().unwrap_or_default();
        tokio::time::sleep(start.saturating_sub(now)).await;
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (server, held) = (server.host(), held.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let opened = turmoil::sim_elapsed().unwrap_or_default();
                let closed = trickle(server).await;
                held.borrow_mut().push((start, closed.then(|| turmoil::sim_elapsed().unwrap_or_default() - opened)));
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        trace.here("slowloris", format_args!("{connections} connections ended"));
    }
    Ok(())
}

/// True once the server closed the connection; false if still open after 30 s.
async fn trickle(server: &str) -> bool {
    let Ok(mut tcp) = TcpStream::connect((server, SERVER_PORT)).await else { return true };
    if tcp.write_all(b"GET /events?topic=t0 HTTP/1.1\r\nhost: x\r\n").await.is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    for _ in 0..30 {
        tokio::select! {
            read = tcp.read(&mut byte) => if !matches!(read, Ok(n) if n > 0) { return true },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if tcp.write_all(b"x").await.is_err() {
                    return true;
                }
            }
        }
    }
    false
}
