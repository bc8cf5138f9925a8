//! A subscriber's link to the server with the faults a plan puts on it (partition, hold,
//! lag): an in-process stand-in for the proxy the real tier puts in front of each client.
//!
//! Turmoil can fault the link between two hosts, but it keeps a link for every pair of
//! hosts and on each 1 ms step scans every link for every host, so a step costs about
//! hosts³ / 2: a host per faulted client made a 100-client plan with a fault every 5 s
//! run at about four simulated seconds per wall second. Here every client shares one host,
//! and a client a link fault names carries its connection through [`Link::carry`]: a task
//! that copies bytes between the subscriber and its turmoil connection, as Toxiproxy does
//! between a client and the server, and applies the link's state:
//!
//! - *partitioned*: bytes (and a close) are dropped both ways; a connection alive at the
//!   heal is reset then (the real tier's `timeout` toxic, and its reset at the heal). A
//!   connection made during a partition is accepted and hears nothing, as through a proxy.
//! - *held*: bytes (and a close) wait, both ways, and move on in order at the release.
//! - *lag*: each chunk waits a further 0 to L (seeded), never overtaking the one before.
//!
//! Holds and partitions are counted, so one fault's heal leaves another's in place.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use sse_server::rng::SeededRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::time::Instant;
use turmoil::net::TcpStream;

/// Bytes a subscriber may leave unread on its side of a carried connection: far more
/// than any plan sends, so the carrier never waits on a stalled reader (turmoil's own
/// streams do not either).
const UNREAD: usize = 64 << 20;

/// What the faults on a link add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LinkState {
    partitions: u32,
    holds: u32,
    lag: Duration,
    /// Partitions healed so far: a connection alive at one is reset.
    heals: u32,
}

/// One client's link; the harness changes it, the carriers of its connections obey.
#[derive(Debug)]
pub struct Link {
    state: watch::Sender<LinkState>,
    rng: SeededRng,
}

impl Link {
    /// A healthy link whose lag draws from `seed`.
    pub fn new(seed: u64) -> Link {
        Link { state: watch::Sender::new(LinkState::default()), rng: SeededRng::new(seed) }
    }

    pub fn partition(&self) {
        self.state.send_modify(|s| s.partitions += 1);
    }

    /// Ends one partition; at the last, every connection that lived through it is reset.
    pub fn repair(&self) {
        self.state.send_modify(|s| {
            if s.partitions > 0 {
                s.partitions -= 1;
                s.heals += u32::from(s.partitions == 0);
            }
        });
    }

    pub fn hold(&self) {
        self.state.send_modify(|s| s.holds += 1);
    }

    pub fn release(&self) {
        self.state.send_modify(|s| s.holds = s.holds.saturating_sub(1));
    }

    /// Each chunk waits up to `lag` more (zero: none).
    pub fn set_lag(&self, lag: Duration) {
        self.state.send_modify(|s| s.lag = lag);
    }

    /// Carries `tcp` through this link: the subscriber uses the returned end. Runs a task
    /// on the current host until both directions have ended or the link resets them.
    pub fn carry(self: &Rc<Self>, tcp: TcpStream) -> DuplexStream {
        let (near, far) = tokio::io::duplex(UNREAD);
        let link = self.clone();
        tokio::task::spawn_local(async move {
            let (tcp_read, tcp_write) = tcp.into_split();
            let (far_read, far_write) = tokio::io::split(far);
            let born = link.state.borrow().heals;
            // Server to subscriber, and subscriber to server; at a reset both return and
            // every half is dropped, which closes both connections.
            tokio::join!(link.direction(tcp_read, far_write, born), link.direction(far_read, tcp_write, born));
        });
        near
    }

    fn delay(&self, lag: Duration) -> Duration {
        Duration::from_micros(self.rng.up_to(lag.as_micros() as u64))
    }

    /// Copies `from` to `to` under the link's state until `from` ends and all it sent was
    /// delivered, `to` fails, or a heal resets the connection.
    async fn direction(&self, mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, born: u32) {
        let mut changes = self.state.subscribe();
        // Chunks in order with the time each may be delivered; `None` is the close.
        let mut queue: VecDeque<(Instant, Option<Vec<u8>>)> = VecDeque::new();
        let mut last_due = Instant::now();
        let mut ended = false;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let state = *changes.borrow_and_update();
            if state.heals != born {
                return;
            }
            let flowing = state.partitions == 0 && state.holds == 0;
            while flowing && queue.front().is_some_and(|(due, _)| *due <= Instant::now()) {
                match queue.pop_front().and_then(|(_, chunk)| chunk) {
                    Some(bytes) if to.write_all(&bytes).await.is_ok() => {}
                    Some(_) => return,
                    None => {
                        let _ = to.shutdown().await;
                        return;
                    }
                }
            }
            let next_due = queue.front().map(|(due, _)| *due).filter(|_| flowing);
            tokio::select! {
                biased;
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
                read = from.read(&mut buf), if !ended => {
                    let chunk = match read {
                        Ok(0) | Err(_) => {
                            ended = true;
                            None
                        }
                        Ok(n) => Some(buf[..n].to_vec()),
                    };
                    if state.partitions == 0 {
                        last_due = last_due.max(Instant::now() + self.delay(state.lag));
                        queue.push_back((last_due, chunk));
                    }
                }
            }
        }
    }
}
