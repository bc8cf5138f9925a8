//! Who is on each client seat of a real run. A seat is a client's place in the plan: its
//! topics and its own Toxiproxy proxy, which every fault aimed at that client acts on. A
//! plan's clients sit for the whole run; with churn (the soak's clients that come and
//! go) a seat's tenant leaves for good at a set time, closing its stream, and a new
//! client takes the seat after a gap, subscribing afresh with no resume id.
//!
//! Each tenant keeps its own record, so the oracle judges it for the part of the run it
//! was there: from its first stream's opening position until it left.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use sse_plan::oracle::Presence;
use sse_server::stream::id::EventId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::subscriber::{self, Shared};

/// A task that ends when its handle is dropped: a run that ends, or is cut short, leaves
/// nothing of its own running.
#[derive(Debug)]
pub struct Owned<T>(JoinHandle<T>);

impl<T: Send + 'static> Owned<T> {
    pub fn spawn(task: impl Future<Output = T> + Send + 'static) -> Owned<T> {
        Owned(tokio::spawn(task))
    }

    /// Whether the task has ended (awaiting it then does not wait).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Future for Owned<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One client on a seat.
struct Tenant {
    record: Shared,
    /// When it subscribed, from the run's start (the plan's clients: zero).
    joined: Duration,
    /// When it left for good, from the run's start.
    left: Option<Duration>,
    /// Tells its subscriber to close its stream and stop.
    leave: watch::Sender<bool>,
    _task: Owned<()>,
}

/// One client seat: its topics, where its proxy listens, and its tenants in order.
pub struct Seat {
    pub topics: BTreeSet<String>,
    listen: SocketAddr,
    heartbeat: Duration,
    tenants: Mutex<Vec<Tenant>>,
}

/// What a seat's tenant is judged on.
#[derive(Debug)]
pub struct TenantView {
    pub record: Shared,
    pub joined: Duration,
    /// `from` is `None` while it never received an opening position.
    pub presence: Presence,
    /// Still there at the end of the run.
    pub stayed: bool,
}

impl Seat {
    /// A seat with its first tenant subscribing through `listen`.
    pub fn new(topics: BTreeSet<String>, listen: SocketAddr, heartbeat: Duration) -> Seat {
        let seat = Seat { topics, listen, heartbeat, tenants: Mutex::default() };
        seat.join(Duration::ZERO);
        seat
    }

    /// A new tenant subscribes at `at` (from the run's start), with no resume id.
    pub fn join(&self, at: Duration) {
        let record = Shared::default();
        let (leave, left) = watch::channel(false);
        let topics = self.topics.iter().cloned().collect();
        let task = Owned::spawn(subscriber::run(self.listen, topics, self.heartbeat, record.clone(), left));
        self.tenants.lock().unwrap().push(Tenant { record, joined: at, left: None, leave, _task: task });
    }

    /// The tenant there leaves for good at `at` (from the run's start): its stream closes.
    pub fn leave(&self, at: Duration) {
        if let Some(tenant) = self.tenants.lock().unwrap().last_mut().filter(|t| t.left.is_none()) {
            tenant.left = Some(at);
            let _ = tenant.leave.send(true);
        }
    }

    /// Every tenant leaves (the run's end).
    pub fn close(&self) {
        for tenant in self.tenants.lock().unwrap().iter() {
            let _ = tenant.leave.send(true);
        }
    }

    /// The record of the tenant there now, if one is.
    pub fn current(&self) -> Option<Shared> {
        self.current_since().map(|(record, _)| record)
    }

    /// The record of the tenant there now and when it joined, if one is there.
    pub fn current_since(&self) -> Option<(Shared, Duration)> {
        self.tenants.lock().unwrap().last().filter(|t| t.left.is_none()).map(|t| (t.record.clone(), t.joined))
    }

    /// Every tenant so far, with what it is owed: events after its first opening position
    /// (timed from `origin`), acknowledged at least `grace` before it left.
    pub fn tenants(&self, origin: Instant, grace: Duration) -> Vec<TenantView> {
        self.tenants
            .lock()
            .unwrap()
            .iter()
            .map(|t| {
                let opened = t.record.lock().unwrap().opened_at.clone();
                let from =
                    opened.and_then(|(id, at)| Some((EventId::parse(&id)?, at.saturating_duration_since(origin))));
                let presence = Presence { from, owed_until: t.left.map(|left| left.saturating_sub(grace)) };
                TenantView { record: t.record.clone(), joined: t.joined, presence, stayed: t.left.is_none() }
            })
            .collect()
    }

    /// Streams opened by all its tenants.
    pub fn connects(&self) -> u32 {
        self.tenants.lock().unwrap().iter().map(|t| t.record.lock().unwrap().connects).sum()
    }
}

/// What the trace says when a seat's client leaves.
pub const LEAVES: &str = "its client leaves for good";

/// When a seat's tenant leaves, and how long the seat stays empty before a new one joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Churn {
    pub at: Duration,
    pub seat: usize,
    pub gap: Duration,
}

/// Carries out `churn` (sorted by time) against `seats`, timed from `origin`; logs each
/// change with `log`.
pub async fn churn(origin: Instant, seats: Arc<Vec<Seat>>, churn: Vec<Churn>, log: impl Fn(String)) {
    // Joins waiting for their time, as (when, seat).
    let mut joins: Vec<(Duration, usize)> = Vec::new();
    let mut leaves = churn.into_iter().peekable();
    loop {
        joins.sort();
        let next_join = joins.first().map(|(at, _)| *at);
        let next_leave = leaves.peek().map(|c| c.at);
        let join_first = match (next_join, next_leave) {
            (None, None) => return,
            (Some(j), Some(l)) => j <= l,
            (j, _) => j.is_some(),
        };
        if join_first {
            let (at, seat) = joins.remove(0);
            tokio::time::sleep_until(origin + at).await;
            seats[seat].join(origin.elapsed());
            log(format!("c{seat}: a new client joins"));
        } else if let Some(Churn { at, seat, gap }) = leaves.next() {
            tokio::time::sleep_until(origin + at).await;
            seats[seat].leave(origin.elapsed());
            log(format!("c{seat}: {LEAVES}; a new one joins in {gap:?}"));
            joins.push((at + gap, seat));
        }
    }
}
