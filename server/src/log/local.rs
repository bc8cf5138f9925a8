//! The single-node log: a sequencer over a [`Store`]. Under one lock an event gets the
//! next id, is framed once and handed to the store, in id order; as the store answers,
//! the answered events at the front of the queue go to the follower in id order (a refused
//! one is dropped, its id never reused). So an event is visible only once it is durable,
//! and visibility moves in id order.
//!
//! A publish whose caller goes away does not stall the queue: the rest of its wait moves
//! to a task of its own (`Settlement`). The common path spawns nothing, which keeps
//! simulations deterministic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::keys::{Keys, Seen};
use super::{AppendError, Appended, Follower, Hold, Log, LogFuture, NewEvent};
use crate::store::{ReadOutcome, Record, Recovery, Store, StoreFuture, TailLimits};

/// A single-node log over `store`.
#[derive(Debug, Clone)]
pub struct LocalLog {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    state: Mutex<State>,
    /// The highest id handed out, readable without the lock.
    assigned: AtomicU64,
    follower: OnceLock<Weak<dyn Follower>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLog").field("store", &self.store).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    last_seq: u64,
    /// Events handed to the store, in id order, until they are answered.
    pending: VecDeque<Pending>,
    keys: Keys,
}

#[derive(Debug)]
struct Pending {
    record: Record,
    key: Option<Box<str>>,
    /// The publisher's hold, dropped after the event was applied or refused.
    hold: Hold,
    /// `Some(true)` once stored, `Some(false)` once refused.
    stored: Option<bool>,
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LocalLog {
    /// A log over `store`, remembering idempotency keys for `dedup_window`.
    pub fn new(store: Arc<dyn Store>, dedup_window: Duration) -> LocalLog {
        let state = State { last_seq: 0, pending: VecDeque::new(), keys: Keys::new(dedup_window) };
        let inner = Inner { store, state: Mutex::new(state), assigned: AtomicU64::new(0), follower: OnceLock::new() };
        LocalLog { inner: Arc::new(inner) }
    }

    /// The store below.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }
}

impl Inner {
    fn follower(&self) -> Option<Arc<dyn Follower>> {
        self.follower.get().and_then(Weak::upgrade)
    }

    /// Records the store's answer for `seq`, then hands every answered event at the
    /// front of the queue to the follower (or drops it, if refused), in id order.
    fn settle(&self, seq: u64, stored: bool) {
        let mut state = lock(&self.state);
        let Some(front) = state.pending.front().map(|p| p.record.seq) else { return };
        if let Some(pending) = state.pending.get_mut((seq - front) as usize) {
            pending.stored = Some(stored);
        }
        let now = Instant::now();
        let (mut committed, mut answered) = (Vec::new(), Vec::new());
        while state.pending.front().is_some_and(|p| p.stored.is_some()) {
            let pending = state.pending.pop_front().expect("checked above");
            let ok = pending.stored == Some(true);
            if let Some(key) = &pending.key {
                if ok {
                    state.keys.stored(key, now);
                } else {
                    state.keys.failed(key);
                }
            }
            if ok {
                committed.push(pending.record);
            }
            answered.push(pending.hold);
        }
        // Still under the lock: the follower must see events in id order.
        if !committed.is_empty() {
            if let Some(follower) = self.follower() {
                follower.apply(committed);
            }
        }
        drop(answered);
    }
}

impl Log for LocalLog {
    fn start(&self, follower: Weak<dyn Follower>, tail: TailLimits) -> Recovery {
        let mut state = lock(&self.inner.state);
        let recovery = self.inner.store.recover(TailLimits { keys_within: state.keys.window(), ..tail });
        let now = Instant::now();
        for (key, seq) in &recovery.keys {
            state.keys.restore(key, *seq, now);
        }
        state.last_seq = recovery.floor;
        drop(state);
        self.inner.assigned.store(recovery.floor, Ordering::Release);
        let _ = self.inner.follower.set(follower);
        recovery
    }

    fn append(&self, event: NewEvent) -> LogFuture<Appended> {
        let inner = &self.inner;
        let mut state = lock(&inner.state);
        if let Some(key) = &event.key {
            match state.keys.seen(key, Instant::now()) {
                Seen::New => {}
                Seen::Stored(seq) => return Box::pin(std::future::ready(Ok(Appended { seq, duplicate: true }))),
                Seen::InFlight => return Box::pin(std::future::ready(Err(AppendError::KeyInFlight))),
            }
        }
        let Some(follower) = inner.follower() else {
            return Box::pin(std::future::ready(Err(AppendError::Store(crate::store::StoreError::Closed))));
        };
        let seq = state.last_seq + 1;
        state.last_seq = seq;
        inner.assigned.store(seq, Ordering::Release);
        let key = event.key.as_deref().map(Arc::from);
        let record = Record { seq, topic: event.topic.clone(), frame: follower.frame(seq, &event), key };
        if let Some(key) = &event.key {
            state.keys.begin(key, seq);
        }
        state.pending.push_back(Pending { record: record.clone(), key: event.key, hold: event.hold, stored: None });
        let stored = inner.store.append(record);
        drop(state);
        let settlement = Settlement { log: self.inner.clone(), seq, stored: Some(stored) };
        Box::pin(async move {
            settlement.wait().await?;
            Ok(Appended { seq, duplicate: false })
        })
    }

    fn read(&self, topics: Vec<Arc<str>>, after: u64, upto: u64) -> StoreFuture<ReadOutcome> {
        self.inner.store.read(topics, after, upto)
    }

    fn trimmed_upto(&self, topic: &str) -> u64 {
        self.inner.store.trimmed_upto(topic)
    }

    fn assigned_upto(&self) -> Option<u64> {
        Some(self.inner.assigned.load(Ordering::Acquire))
    }

    fn is_healthy(&self) -> bool {
        self.inner.store.is_healthy()
    }

    fn close(&self) -> StoreFuture<()> {
        self.inner.store.close()
    }
}

/// One handed-out event's acknowledgement, awaited where the publish waits. If the
/// publish is dropped first (its client went away), the rest of the wait moves to a task
/// of its own, so the event still settles and nothing behind it stalls.
struct Settlement {
    log: Arc<Inner>,
    seq: u64,
    stored: Option<StoreFuture<()>>,
}

impl Settlement {
    async fn wait(mut self) -> Result<(), AppendError> {
        let outcome = self.stored.as_mut().expect("waited once").await;
        self.stored = None;
        self.log.settle(self.seq, outcome.is_ok());
        Ok(outcome?)
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        let Some(stored) = self.stored.take() else { return };
        let (log, seq) = (self.log.clone(), self.seq);
        // Without a runtime (the process is ending) there is nobody left to wait for it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let outcome = stored.await;
                log.settle(seq, outcome.is_ok());
            });
        }
    }
}
