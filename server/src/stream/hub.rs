//! The hub: per-topic windows and subscriber wake-ups, following a [`Log`].
//!
//! A publish is appended to the log, which assigns its id and answers once it is durable.
//! Committed events come back from the log in id order ([`Follower::apply`]): each joins
//! its topic's window and then the `visible` watermark moves to it. Readers take events up
//! to a watermark they loaded first, so a multi-topic stream never sees id 11 of one topic
//! before id 10 of another, and no stream ever sees an event the log does not hold.
//! Subscribers are cursors (a last-delivered id): their memory does not grow with lag.
//! A cursor behind a window's oldest event is told so ([`Gap`]) and catches up from the
//! log; one behind what the log retains is told `reset: evicted`, never handed a
//! silently shortened history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::error::ApiError;
use crate::log::{AppendError, Follower, Hold, Log, NewEvent};
use crate::metrics::Metrics;
use crate::store::{ReadOutcome, Record, StoreError, StoreFuture, TailLimits};
use crate::stream::frame::{self, ResetReason};
use crate::stream::id::EventId;
use crate::stream::pacing::{Coalesce, Pace};
use crate::stream::signal::Signal;

/// Most events handed to one write.
pub const MAX_BATCH_EVENTS: usize = 256;
/// Most bytes handed to one write (at least one event is always handed over).
pub const MAX_BATCH_BYTES: usize = 256 << 10;

/// Bounds and pacing of the hub.
#[derive(Clone, Debug)]
pub struct HubLimits {
    /// Events kept per topic.
    pub window: usize,
    /// Framed bytes kept per topic.
    pub window_bytes: usize,
    /// Topics held at once.
    pub max_topics: usize,
    /// How long a topic gathers events before waking subscribers.
    pub coalesce: Coalesce,
    /// Framed bytes held in all windows (and in flight to the log) together; a publish
    /// that would grow past it is refused (503), so no mix of topics can exhaust memory.
    pub max_buffered_bytes: usize,
}

/// The subscriber's cursor is behind what its topics' windows hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap;

/// Where a new subscription starts.
#[derive(Debug)]
pub(crate) struct Start {
    /// Deliver events with ids above this.
    pub after: u64,
    /// A reset notice to send first, if the resume id could not be honoured.
    pub reset: Option<ResetReason>,
}

/// A publish's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The event's id.
    pub id: EventId,
    /// The idempotency key was seen within the dedup window: this is the first
    /// publish's id and nothing new was stored.
    pub duplicate: bool,
}

/// Every topic, and the log they follow.
#[derive(Debug)]
pub struct Hub {
    epoch: u32,
    limits: HubLimits,
    state: Mutex<HubState>,
    /// Highest id the hub has applied; readers never look past it.
    visible: AtomicU64,
    next_subscriber: AtomicU64,
    /// Set when the server drains: every stream says goodbye and ends.
    closing: AtomicBool,
    metrics: Arc<Metrics>,
    log: Arc<dyn Log>,
    /// Ids at or below this may be in the log from before the hub started.
    floor: u64,
}

#[derive(Debug, Default)]
struct HubState {
    /// Framed bytes in all windows.
    buffered: usize,
    /// Framed bytes reserved by publishes waiting for the log (an upper bound).
    in_flight: usize,
    /// Publishes waiting for the log.
    in_flight_count: u64,
    /// Highest id applied without a window to hold it (the topic limit was reached): a
    /// topic created later reads anything up to here from the log.
    unwindowed_upto: u64,
    topics: BTreeMap<Arc<str>, Arc<Topic>>,
}

/// One topic: its window and its subscribers' wake-up handles.
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    inner: Mutex<TopicInner>,
}

#[derive(Debug, Default)]
struct TopicInner {
    window: VecDeque<Stored>,
    bytes: usize,
    /// Highest id older than the window; a cursor below it reads from the log.
    evicted_upto: u64,
    subscribers: BTreeMap<u64, Arc<Signal>>,
    flush_pending: bool,
    /// How fast events arrive (for `--coalesce auto`).
    pace: Pace,
}

#[derive(Debug)]
struct Stored {
    seq: u64,
    frame: Bytes,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TopicInner {
    fn wake_all(&self) {
        for signal in self.subscribers.values() {
            signal.notify();
        }
    }

    /// How many of the oldest events (and how many bytes) a new event of `incoming`
    /// bytes pushes out of the window. The newest event always stays.
    fn evictions_for(&self, incoming: usize, limits: &HubLimits) -> (usize, usize) {
        let (mut len, mut bytes) = (self.window.len() + 1, self.bytes + incoming);
        let (mut count, mut freed) = (0, 0);
        for old in &self.window {
            if len <= 1 || (len <= limits.window && bytes <= limits.window_bytes) {
                break;
            }
            len -= 1;
            bytes -= old.frame.len();
            count += 1;
            freed += old.frame.len();
        }
        (count, freed)
    }

    /// Appends an event, evicting what the limits call for; returns the change in bytes.
    fn push(&mut self, seq: u64, frame: Bytes, limits: &HubLimits) -> (usize, usize) {
        let (evicted, freed) = self.evictions_for(frame.len(), limits);
        let added = frame.len();
        self.bytes = self.bytes - freed + added;
        self.window.push_back(Stored { seq, frame });
        if let Some(last_evicted) = self.window.drain(..evicted).last() {
            self.evicted_upto = self.evicted_upto.max(last_evicted.seq);
        }
        (added, freed)
    }

    /// Nothing to remember: no subscribers and no window (a window keeps its newest
    /// event, so an empty one never held any; a topic made anew starts at least as far
    /// back as this one did).
    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.window.is_empty()
    }
}

impl Hub {
    /// A hub following `log`, starting from what the log recovered: its epoch, ids above
    /// its floor, and windows filled with the newest retained events.
    pub fn new(log: Arc<dyn Log>, limits: HubLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        let tail = TailLimits {
            events: limits.window,
            bytes: limits.window_bytes,
            total_bytes: limits.max_buffered_bytes,
            keys_within: Duration::ZERO,
        };
        Arc::new_cyclic(|me: &Weak<Hub>| {
            let recovery = log.start(me.clone(), tail);
            let hub = Hub {
                epoch: recovery.epoch,
                limits,
                state: Mutex::new(HubState::default()),
                visible: AtomicU64::new(recovery.floor),
                next_subscriber: AtomicU64::new(1),
                closing: AtomicBool::new(false),
                metrics,
                log,
                floor: recovery.floor,
            };
            hub.preload(recovery.tail);
            hub
        })
    }

    fn preload(&self, tail: Vec<Record>) {
        let mut state = lock(&self.state);
        for record in tail {
            let Ok(topic) = self.topic_in(&mut state, &record.topic) else { continue };
            let mut inner = lock(&topic.inner);
            if inner.window.is_empty() {
                // Anything older is in the log: cursors below read from there.
                inner.evicted_upto = record.seq - 1;
            }
            // The tail was cut to the windows' limits, so pushing it evicts nothing.
            let (added, _) = inner.push(record.seq, record.frame, &self.limits);
            state.buffered += added;
        }
        self.metrics.add_buffered(state.buffered as i64);
    }

    /// The history these ids belong to.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The log the hub follows.
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// Whether the log is accepting appends.
    pub fn store_is_healthy(&self) -> bool {
        self.log.is_healthy()
    }

    /// Tells every stream to end (they check [`Hub::is_closing`] when woken). Streams
    /// watch this instead of holding a cancellation future each: less memory per stream.
    pub fn close_streams(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let state = lock(&self.state);
        for topic in state.topics.values() {
            lock(&topic.inner).wake_all();
        }
    }

    /// Stream registrations on topics: zero once every stream is gone, whatever the
    /// gauges say (a leak check for simulations and tests).
    pub fn registrations(&self) -> usize {
        lock(&self.state).topics.values().map(|topic| lock(&topic.inner).subscribers.len()).sum()
    }

    /// Whether streams have been told to end.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Publishes one event and returns its id once the log holds it durably.
    pub async fn publish(
        self: &Arc<Self>,
        topic: &str,
        event_type: Option<&str>,
        data: &str,
    ) -> Result<EventId, ApiError> {
        Ok(self.publish_keyed(topic, event_type, data, None).await?.id)
    }

    /// Publishes one event under an idempotency key: a key the log has seen within its
    /// dedup window gets the first publish's id back and stores nothing new. Dropping the
    /// future loses nothing: an event handed to the log is still settled.
    pub async fn publish_keyed(
        self: &Arc<Self>,
        topic: &str,
        event_type: Option<&str>,
        data: &str,
        key: Option<&str>,
    ) -> Result<Published, ApiError> {
        let reservation = self.admit(topic, event_type, data)?;
        let event = NewEvent {
            topic: Arc::from(topic),
            event_type: event_type.map(Box::from),
            data: Box::from(data),
            key: key.map(Box::from),
            hold: Hold::new(reservation),
        };
        let outcome = self.log.append(event).await;
        match outcome {
            Ok(appended) => {
                if !appended.duplicate {
                    self.metrics.published();
                }
                Ok(Published { id: EventId { epoch: self.epoch, seq: appended.seq }, duplicate: appended.duplicate })
            }
            Err(AppendError::Store(error)) => Err(self.refused(&error)),
            Err(AppendError::KeyInFlight) => Err(ApiError::Conflict(
                "publish_in_flight",
                "a publish with this Idempotency-Key is still being stored; retry for its id",
                Duration::from_secs(1),
            )),
        }
    }

    /// Checks the topic limit and the buffer budget, and reserves the event's bytes
    /// until the log has answered.
    fn admit(self: &Arc<Self>, topic: &str, event_type: Option<&str>, data: &str) -> Result<Reservation, ApiError> {
        let mut state = lock(&self.state);
        let held = state.topics.get(topic).cloned();
        if held.is_none() && state.topics.len() >= self.limits.max_topics {
            self.metrics.rejected("max_topics");
            return Err(topic_limit());
        }
        // The id is not known yet: reserve for the widest it can be.
        let widest = self.log.assigned_upto().map(|seq| seq + state.in_flight_count + 1);
        let bytes = frame::event_len(widest, event_type, data);
        let freed = held.map_or(0, |topic| lock(&topic.inner).evictions_for(bytes, &self.limits).1);
        if state.buffered + state.in_flight - freed + bytes > self.limits.max_buffered_bytes {
            self.metrics.rejected("buffer_full");
            return Err(ApiError::Unavailable(
                "buffer_full",
                "the server holds its maximum of buffered events",
                Duration::from_secs(1),
            ));
        }
        state.in_flight += bytes;
        state.in_flight_count += 1;
        Ok(Reservation { hub: self.clone(), bytes })
    }

    /// Wakes a topic's streams after events arrived: at once, or once the hold its
    /// pacing picks is over (events arriving meanwhile join the same wake-up).
    fn wake(&self, topic: &Arc<Topic>) {
        let mut inner = lock(&topic.inner);
        let subscribers = inner.subscribers.len();
        let hold = self.limits.coalesce.hold(&mut inner.pace, tokio::time::Instant::now(), subscribers);
        if inner.flush_pending {
            return;
        }
        if hold.is_zero() {
            self.metrics.woke(false);
            inner.wake_all();
            return;
        }
        self.metrics.woke(true);
        inner.flush_pending = true;
        let topic = topic.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let mut inner = lock(&topic.inner);
            inner.flush_pending = false;
            inner.wake_all();
        });
    }

    fn refused(&self, error: &StoreError) -> ApiError {
        let (code, message, retry) = match error {
            StoreError::Full(_) => ("store_full", "the disk of the event store is full; the event was not stored", 5),
            StoreError::Uncertain(_) => (
                "store_timeout",
                "the event store did not answer in time; the event may be stored: retry with the same Idempotency-Key",
                1,
            ),
            _ => ("store_unavailable", "the event store cannot write; the event was not stored", 1),
        };
        self.metrics.rejected(code);
        ApiError::Unavailable(code, message, Duration::from_secs(retry))
    }

    /// Registers `signal` on each topic and decides where delivery starts.
    pub(crate) fn subscribe(
        &self,
        topics: &[String],
        last_event_id: Option<&str>,
        signal: &Arc<Signal>,
    ) -> Result<(u64, Vec<Arc<Topic>>, Start), ApiError> {
        let mut state = lock(&self.state);
        let missing = topics.iter().filter(|t| !state.topics.contains_key(t.as_str())).count();
        if state.topics.len() + missing > self.limits.max_topics {
            self.metrics.rejected("max_topics");
            return Err(topic_limit());
        }
        let subscriber = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let handles: Vec<Arc<Topic>> = topics.iter().map(|t| self.topic_in(&mut state, t)).collect::<Result<_, _>>()?;
        let visible = self.visible.load(Ordering::Acquire);
        let mut trimmed_upto = 0;
        for topic in &handles {
            trimmed_upto = trimmed_upto.max(self.log.trimmed_upto(&topic.name));
            lock(&topic.inner).subscribers.insert(subscriber, signal.clone());
        }
        self.metrics.add_subscriptions(handles.len() as i64);
        // Ids handed out but not visible yet (a publish settling) are known too; a log
        // others append to cannot tell, and takes an id of its epoch at its word.
        let unknown = |seq: u64| self.log.assigned_upto().is_some_and(|assigned| seq > assigned);
        let reset = |reason| Start { after: trimmed_upto, reset: Some(reason) };
        let start = match last_event_id {
            None => Start { after: visible, reset: None },
            Some(text) => match EventId::parse(text) {
                None => reset(ResetReason::Malformed),
                Some(id) if id.epoch != self.epoch => reset(ResetReason::OtherEpoch),
                Some(id) if unknown(id.seq) => reset(ResetReason::Unknown),
                Some(id) if id.seq < trimmed_upto => reset(ResetReason::Evicted),
                Some(id) => Start { after: id.seq, reset: None },
            },
        };
        Ok((subscriber, handles, start))
    }

    /// Removes a subscriber; forgets topics left with nothing in them.
    pub(crate) fn unsubscribe(&self, subscriber: u64, topics: &[Arc<Topic>]) {
        let mut state = lock(&self.state);
        for topic in topics {
            let unused = {
                let mut inner = lock(&topic.inner);
                if inner.subscribers.remove(&subscriber).is_some() {
                    self.metrics.add_subscriptions(-1);
                }
                inner.is_unused()
            };
            if unused {
                state.topics.remove(&topic.name);
            }
        }
        self.metrics.set_topics(state.topics.len());
    }

    /// Events after `after` on `topics`, in id order, bounded per write; `Gap` when one
    /// of the topics' windows no longer reaches back to the cursor.
    pub(crate) fn read_after(&self, topics: &[Arc<Topic>], after: u64) -> Result<Vec<(u64, Bytes)>, Gap> {
        let upto = self.visible.load(Ordering::Acquire);
        if upto <= after {
            return Ok(Vec::new());
        }
        let mut batch = Vec::new();
        for topic in topics {
            let inner = lock(&topic.inner);
            if inner.evicted_upto > after {
                return Err(Gap);
            }
            let from = inner.window.partition_point(|e| e.seq <= after);
            batch.extend(
                inner
                    .window
                    .range(from..)
                    .take_while(|e| e.seq <= upto)
                    .take(MAX_BATCH_EVENTS)
                    .map(|e| (e.seq, e.frame.clone())),
            );
        }
        if topics.len() > 1 {
            batch.sort_unstable_by_key(|(seq, _)| *seq);
        }
        batch.truncate(crate::store::fitting(&batch, MAX_BATCH_EVENTS, MAX_BATCH_BYTES));
        Ok(batch)
    }

    /// Reads the next stretch after `after` from the log (for a cursor behind a window).
    pub(crate) fn read_store(&self, topics: &[Arc<Topic>], after: u64) -> StoreFuture<ReadOutcome> {
        let upto = self.visible.load(Ordering::Acquire);
        self.log.read(topics.iter().map(|t| t.name.clone()).collect(), after, upto)
    }

    /// Evicts the oldest events, a topic at a time in name order, until the windows are
    /// within `max_buffered_bytes` (each keeps its newest); returns the bytes freed.
    fn shrink_to_budget(&self, state: &mut HubState) -> usize {
        let mut freed = 0;
        while state.buffered > self.limits.max_buffered_bytes {
            let before = freed;
            for topic in state.topics.values() {
                let mut inner = lock(&topic.inner);
                if inner.window.len() > 1 {
                    let oldest = inner.window.pop_front().expect("more than one");
                    inner.bytes -= oldest.frame.len();
                    inner.evicted_upto = inner.evicted_upto.max(oldest.seq);
                    freed += oldest.frame.len();
                    state.buffered -= oldest.frame.len();
                    if state.buffered <= self.limits.max_buffered_bytes {
                        break;
                    }
                }
            }
            if freed == before {
                break;
            }
        }
        freed
    }

    fn topic_in(&self, state: &mut HubState, name: &str) -> Result<Arc<Topic>, ApiError> {
        if let Some(topic) = state.topics.get(name) {
            return Ok(topic.clone());
        }
        if state.topics.len() >= self.limits.max_topics {
            self.metrics.rejected("max_topics");
            return Err(topic_limit());
        }
        let name: Arc<str> = Arc::from(name);
        // A topic not held has no events in any window: whatever the log kept from before
        // the hub started, or applied while no window could hold it, is older than this
        // window, and a cursor at or below that reads the log first.
        let evicted_upto = self.floor.max(state.unwindowed_upto);
        let inner = TopicInner { evicted_upto, ..TopicInner::default() };
        let topic = Arc::new(Topic { name: name.clone(), inner: Mutex::new(inner) });
        state.topics.insert(name, topic.clone());
        self.metrics.set_topics(state.topics.len());
        Ok(topic)
    }
}

impl Follower for Hub {
    fn frame(&self, seq: u64, event: &NewEvent) -> Bytes {
        frame::event(EventId { epoch: self.epoch, seq }, event.event_type.as_deref(), &event.data)
    }

    /// Each committed event joins its topic's window (a topic made for it if there is
    /// room), then the watermark moves past the batch and the topics' streams are woken.
    fn apply(&self, records: Vec<Record>) {
        let Some(last) = records.last().map(|r| r.seq) else { return };
        let mut state = lock(&self.state);
        let mut touched: Vec<Arc<Topic>> = Vec::new();
        let mut delta = 0i64;
        for record in records {
            let Ok(topic) = self.topic_in(&mut state, &record.topic) else {
                state.unwindowed_upto = record.seq;
                continue;
            };
            let (added, freed) = lock(&topic.inner).push(record.seq, record.frame, &self.limits);
            state.buffered = state.buffered + added - freed;
            delta += added as i64 - freed as i64;
            if !touched.iter().any(|t| Arc::ptr_eq(t, &topic)) {
                touched.push(topic);
            }
        }
        // Events other nodes published were never admitted here: the budget holds
        // whatever the log hands over.
        delta -= self.shrink_to_budget(&mut state) as i64;
        self.visible.store(last, Ordering::Release);
        drop(state);
        for topic in touched {
            self.wake(&topic);
        }
        self.metrics.add_buffered(delta);
    }

    /// Cursors up to `upto` must read the log: the log removed events there before the
    /// hub applied them, so no window is complete that far back.
    fn skipped(&self, upto: u64) {
        let mut state = lock(&self.state);
        state.unwindowed_upto = state.unwindowed_upto.max(upto);
        for topic in state.topics.values() {
            let mut inner = lock(&topic.inner);
            inner.evicted_upto = inner.evicted_upto.max(upto);
        }
    }
}

fn topic_limit() -> ApiError {
    ApiError::Unavailable("topic_limit", "the server holds its maximum number of topics", Duration::from_secs(5))
}

/// A publish's reserved bytes, held by the log with the event and given back once the
/// event has been applied or refused (or, for a log that cannot settle an abandoned
/// append, when the publish is dropped).
struct Reservation {
    hub: Arc<Hub>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = lock(&self.hub.state);
        state.in_flight -= self.bytes;
        state.in_flight_count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LocalLog;
    use crate::store::{FsyncPolicy, MemoryStore, Store};

    fn memory(window: usize, window_bytes: usize) -> Arc<dyn Store> {
        Arc::new(MemoryStore::new(7, window, window_bytes, FsyncPolicy::Always))
    }

    fn hub_on(store: Arc<dyn Store>, limits: HubLimits) -> Arc<Hub> {
        Hub::new(Arc::new(LocalLog::new(store, Duration::from_secs(60))), limits, Arc::new(Metrics::new()))
    }

    fn limits(window: usize, max_buffered_bytes: usize) -> HubLimits {
        HubLimits {
            window,
            window_bytes: 1 << 20,
            max_topics: 4,
            coalesce: Coalesce::Fixed(Duration::ZERO),
            max_buffered_bytes,
        }
    }

    fn hub(window: usize, window_bytes: usize) -> Arc<Hub> {
        let limits = HubLimits {
            window,
            window_bytes,
            max_topics: 4,
            coalesce: Coalesce::Fixed(Duration::ZERO),
            max_buffered_bytes: usize::MAX,
        };
        hub_on(memory(window, window_bytes), limits)
    }

    fn seqs(batch: &[(u64, Bytes)]) -> Vec<u64> {
        batch.iter().map(|(s, _)| *s).collect()
    }

    /// A store that acknowledges nothing until its gate opens.
    #[derive(Debug)]
    struct GatedAppends {
        inner: MemoryStore,
        gate: tokio::sync::watch::Receiver<bool>,
    }

    impl Store for GatedAppends {
        fn recover(&self, tail: TailLimits) -> crate::store::Recovery {
            self.inner.recover(tail)
        }
        fn append(&self, record: Record) -> StoreFuture<()> {
            let (stored, mut gate) = (self.inner.append(record), self.gate.clone());
            Box::pin(async move {
                let _ = gate.wait_for(|open| *open).await;
                stored.await
            })
        }
        fn read(&self, topics: Vec<Arc<str>>, after: u64, upto: u64) -> StoreFuture<ReadOutcome> {
            self.inner.read(topics, after, upto)
        }
        fn trimmed_upto(&self, topic: &str) -> u64 {
            self.inner.trimmed_upto(topic)
        }
        fn is_healthy(&self) -> bool {
            true
        }
        fn close(&self) -> StoreFuture<()> {
            self.inner.close()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_dropped_while_the_store_is_busy_still_settles_and_blocks_nothing() {
        let (open, gate) = tokio::sync::watch::channel(false);
        let store = Arc::new(GatedAppends { inner: MemoryStore::new(7, 10, 1 << 20, FsyncPolicy::Always), gate });
        let hub = hub_on(store, limits(10, usize::MAX));
        let signal = Arc::new(Signal::default());
        let (_, topics, _) = hub.subscribe(&["t".into()], None, &signal).unwrap();
        // The first publisher leaves while its event waits for the store.
        let first = tokio::time::timeout(Duration::from_millis(10), hub.publish("t", None, "first")).await;
        assert!(first.is_err(), "the store holds the first publish");
        let second = tokio::spawn({
            let hub = hub.clone();
            async move { hub.publish("t", None, "second").await }
        });
        open.send(true).unwrap();
        assert_eq!(second.await.unwrap().unwrap().seq, 2);
        let mut visible = Vec::new();
        for _ in 0..100 {
            visible = seqs(&hub.read_after(&topics, 0).unwrap());
            if visible.len() == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(visible, [1, 2], "the abandoned event settled, so the one behind it became visible");
    }

    /// An event applied while no window could hold its topic (the topic limit was
    /// reached between its publish and its commit) must be read from the log by a
    /// stream that opens on that topic later, not skipped.
    #[tokio::test(start_paused = true)]
    async fn an_event_no_window_could_hold_is_read_from_the_log_later() {
        let (open, gate) = tokio::sync::watch::channel(false);
        let store = Arc::new(GatedAppends { inner: MemoryStore::new(7, 10, 1 << 20, FsyncPolicy::Always), gate });
        let hub = hub_on(store, HubLimits { max_topics: 2, ..limits(10, usize::MAX) });
        let signal = Arc::new(Signal::default());
        hub.subscribe(&["a".into()], None, &signal).unwrap();
        let publish = tokio::spawn({
            let hub = hub.clone();
            async move { hub.publish("b", None, "x").await }
        });
        tokio::task::yield_now().await;
        let (taker, taken, _) = hub.subscribe(&["c".into()], None, &signal).unwrap();
        open.send(true).unwrap();
        assert_eq!(publish.await.unwrap().unwrap().seq, 1);
        assert!(!lock(&hub.state).topics.contains_key("b"), "no room for b's window");
        hub.unsubscribe(taker, &taken);
        let (_, topics, start) = hub.subscribe(&["b".into()], Some("00000007-0"), &signal).unwrap();
        assert_eq!(hub.read_after(&topics, start.after), Err(Gap), "b's event is in the log only");
        let ReadOutcome::Events { events, .. } = hub.read_store(&topics, start.after).await.unwrap() else { panic!() };
        assert_eq!(seqs(&events), [1]);
    }

    fn record(hub: &Hub, seq: u64, topic: &str, data: &str) -> Record {
        let event = NewEvent {
            topic: Arc::from(topic),
            event_type: None,
            data: Box::from(data),
            key: None,
            hold: crate::log::Hold::none(),
        };
        Record { seq, topic: event.topic.clone(), frame: hub.frame(seq, &event), key: None }
    }

    /// A log that removed events before the hub applied them (a lagging cluster node):
    /// cursors up to there must read the log, not trust a window that never held them.
    #[tokio::test]
    async fn events_the_log_removed_before_they_were_applied_send_cursors_to_the_log() {
        let hub = hub(10, 1 << 20);
        let signal = Arc::new(Signal::default());
        let (_, topics, _) = hub.subscribe(&["a".into()], None, &signal).unwrap();
        hub.apply(vec![record(&hub, 1, "a", "x")]);
        hub.skipped(4);
        hub.apply(vec![record(&hub, 5, "a", "y")]);
        assert_eq!(hub.read_after(&topics, 1), Err(Gap), "2 to 4 may have been a's");
        assert_eq!(seqs(&hub.read_after(&topics, 4).unwrap()), [5]);
        let (_, later, _) = hub.subscribe(&["b".into()], None, &signal).unwrap();
        assert_eq!(hub.read_after(&later, 3), Err(Gap), "a topic made later starts past the removal too");
    }

    /// Events applied from the log were never admitted here (other nodes published them):
    /// the windows still stay within the budget, the oldest leaving first.
    #[tokio::test]
    async fn applied_events_past_the_budget_push_the_oldest_out() {
        let frame_len = frame::event(EventId { epoch: 7, seq: 1 }, None, "x").len();
        let limits = HubLimits { max_buffered_bytes: 4 * frame_len, ..limits(100, usize::MAX) };
        let hub = hub_on(memory(100, 1 << 20), HubLimits { max_topics: 4, ..limits });
        let signal = Arc::new(Signal::default());
        let (_, topics, _) = hub.subscribe(&["a".into(), "b".into()], None, &signal).unwrap();
        let records = (1..=8).map(|seq| record(&hub, seq, if seq % 2 == 0 { "a" } else { "b" }, "x")).collect();
        hub.apply(records);
        assert!(lock(&hub.state).buffered <= 4 * frame_len, "buffered {}", lock(&hub.state).buffered);
        assert_eq!(hub.read_after(&topics, 0), Err(Gap), "the oldest left the windows");
        assert_eq!(seqs(&hub.read_after(&topics, 4).unwrap()), [5, 6, 7, 8]);
    }

    #[tokio::test]
    async fn multi_topic_reads_come_in_id_order() {
        let hub = hub(100, 1 << 20);
        let signal = Arc::new(Signal::default());
        let (_, topics, start) = hub.subscribe(&["a".into(), "b".into()], None, &signal).unwrap();
        for t in ["a", "b", "b", "a", "c", "a"] {
            hub.publish(t, None, "x").await.unwrap();
        }
        assert_eq!(seqs(&hub.read_after(&topics, start.after).unwrap()), [1, 2, 3, 4, 6]);
        assert_eq!(seqs(&hub.read_after(&topics, 3).unwrap()), [4, 6]);
    }

    #[tokio::test]
    async fn window_evicts_by_count_and_bytes_and_reports_the_gap() {
        let hub = hub(3, 1 << 20);
        let signal = Arc::new(Signal::default());
        let (_, topics, _) = hub.subscribe(&["a".into()], None, &signal).unwrap();
        for _ in 0..5 {
            hub.publish("a", None, "x").await.unwrap();
        }
        assert_eq!(hub.read_after(&topics, 1), Err(Gap));
        assert_eq!(seqs(&hub.read_after(&topics, 2).unwrap()), [3, 4, 5]);

        let hub = self::hub(100, 100);
        let (_, topics, _) = hub.subscribe(&["a".into()], None, &signal).unwrap();
        for _ in 0..5 {
            hub.publish("a", None, &"y".repeat(30)).await.unwrap();
        }
        let kept = hub.read_after(&topics, 4).unwrap();
        assert_eq!(seqs(&kept), [5]);
        assert_eq!(hub.read_after(&topics, 3), Err(Gap));

        // Frames of one length and room for two and a half: the two newest stay; then one
        // twice as long pushes out both.
        let frame_len = kept[0].1.len();
        let hub = self::hub(100, frame_len * 5 / 2);
        let (_, topics, _) = hub.subscribe(&["a".into()], None, &signal).unwrap();
        for _ in 0..5 {
            hub.publish("a", None, &"y".repeat(30)).await.unwrap();
        }
        assert_eq!(seqs(&hub.read_after(&topics, 3).unwrap()), [4, 5]);
        assert_eq!(hub.read_after(&topics, 2), Err(Gap));
        hub.publish("a", None, &"z".repeat(30 + frame_len)).await.unwrap();
        assert_eq!(seqs(&hub.read_after(&topics, 5).unwrap()), [6]);
        assert_eq!(hub.read_after(&topics, 4), Err(Gap));
    }

    /// A hub started on a log that holds events (a restart) has them in its windows, within
    /// the window's limits, so a stream resuming from before them reads no store.
    #[tokio::test]
    async fn a_new_hub_starts_with_the_logs_newest_events_in_its_windows() {
        let store = memory(100, 1 << 20);
        let first = hub_on(store.clone(), limits(100, usize::MAX));
        for topic in ["a", "b", "a", "a"] {
            first.publish(topic, None, "x").await.unwrap();
        }
        let again = hub_on(store, limits(2, usize::MAX));
        let signal = Arc::new(Signal::default());
        let (_, a, _) = again.subscribe(&["a".into()], None, &signal).unwrap();
        assert_eq!(seqs(&again.read_after(&a, 2).unwrap()), [3, 4], "a's newest two");
        assert_eq!(again.read_after(&a, 1), Err(Gap), "what came before them is read from the log");
        let (_, b, _) = again.subscribe(&["b".into()], None, &signal).unwrap();
        assert_eq!(seqs(&again.read_after(&b, 1).unwrap()), [2]);
        let held: usize = [again.read_after(&a, 2), again.read_after(&b, 1)]
            .into_iter()
            .flat_map(|events| events.unwrap())
            .map(|(_, frame)| frame.len())
            .sum();
        assert_eq!(lock(&again.state).buffered, held, "the bytes buffered are the windows'");
    }

    #[tokio::test]
    async fn resume_ids_that_cannot_be_honoured_reset() {
        let hub = hub(2, 1 << 20);
        let signal = Arc::new(Signal::default());
        for _ in 0..4 {
            hub.publish("a", None, "x").await.unwrap();
        }
        let start = |id: &str| hub.subscribe(&["a".into()], Some(id), &signal).unwrap().2;
        let ok = start("00000007-2");
        assert_eq!((ok.after, ok.reset), (2, None));
        assert_eq!(start("00000007-1").reset, Some(ResetReason::Evicted));
        assert_eq!(start("00000007-1").after, 2, "replay restarts at the oldest retained event");
        assert_eq!(start("00000008-3").reset, Some(ResetReason::OtherEpoch));
        assert_eq!(start("00000007-9").reset, Some(ResetReason::Unknown));
        assert_eq!(start("nonsense").reset, Some(ResetReason::Malformed));
    }

    /// Guards the watermark: without it, a reader can take id 11 from one topic while
    /// id 10 of another is still being appended, then skip 10 for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishes_never_let_a_multi_topic_reader_skip() {
        const PER_PUBLISHER: u64 = 20_000;
        let hub = self::hub(1 << 20, 1 << 30);
        let signal = Arc::new(Signal::default());
        let (_, topics, start) = hub.subscribe(&["a".into(), "b".into()], None, &signal).unwrap();
        let publishers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|topic| {
                let hub = hub.clone();
                tokio::spawn(async move {
                    for _ in 0..PER_PUBLISHER {
                        hub.publish(topic, None, "x").await.unwrap();
                    }
                })
            })
            .collect();
        let mut after = start.after;
        // A few seconds in a debug build; a reader that stops fails here, not by hanging.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while after < 2 * PER_PUBLISHER {
            assert!(tokio::time::Instant::now() < deadline, "the reader stopped at {after}");
            for (seq, _) in hub.read_after(&topics, after).unwrap() {
                assert_eq!(seq, after + 1, "the reader skipped an event");
                after = seq;
            }
            tokio::task::yield_now().await;
        }
        for publisher in publishers {
            publisher.await.unwrap();
        }
    }

    /// A topic the restart did not refill (the buffer budget ran out) must still send a
    /// resuming cursor to the store, not report "nothing after it".
    #[tokio::test]
    async fn a_topic_left_out_of_the_refill_reads_its_history_from_the_store() {
        let store = memory(10, 1 << 20);
        let first = hub_on(store.clone(), limits(10, usize::MAX));
        for topic in ["a", "b", "b"] {
            first.publish(topic, None, "x").await.unwrap();
        }
        drop(first);
        let second = hub_on(store, limits(10, 1));
        let signal = Arc::new(Signal::default());
        let (_, topics, start) = second.subscribe(&["b".into()], Some("00000007-0"), &signal).unwrap();
        assert_eq!((start.after, start.reset), (0, None));
        assert_eq!(second.read_after(&topics, 0), Err(Gap), "nothing was refilled: ask the store");
        let read = second.read_store(&topics, 0).await.unwrap();
        let ReadOutcome::Events { events, .. } = read else { panic!("{read:?}") };
        assert_eq!(seqs(&events), [2, 3]);
    }

    #[tokio::test]
    async fn the_global_budget_refuses_growth_but_not_turnover() {
        let limits = HubLimits {
            window: 3,
            window_bytes: 1 << 20,
            max_topics: 10,
            coalesce: Coalesce::Fixed(Duration::ZERO),
            max_buffered_bytes: 0,
        };
        let frame_len = frame::event(EventId { epoch: 7, seq: 1 }, None, "x").len();
        let limits = HubLimits { max_buffered_bytes: 6 * frame_len, ..limits };
        let hub = hub_on(memory(3, 1 << 20), limits);
        for topic in ["a", "a", "a", "b", "b", "b"] {
            hub.publish(topic, None, "x").await.unwrap();
        }
        let refused = hub.publish("c", None, "x").await.unwrap_err();
        assert_eq!((refused.status(), refused.code()), (503, "buffer_full"));
        assert_eq!(lock(&hub.state).topics.len(), 2, "the refused topic is not kept");
        hub.publish("a", None, "x").await.expect("a full window turns over within the budget");
        assert_eq!(lock(&hub.state).buffered, 6 * frame_len);
    }

    /// A publish reserves room for the widest id it can get: the tenth event's id has two
    /// digits, so a budget a byte short of it refuses the tenth, though nine fitted.
    #[tokio::test]
    async fn the_budget_reserves_for_an_id_one_digit_wider() {
        let frame_len = frame::event(EventId { epoch: 7, seq: 1 }, None, "x").len();
        let budget = 9 * frame_len + (frame_len + 1) - 1;
        let limits = HubLimits { max_buffered_bytes: budget, ..limits(100, usize::MAX) };
        let hub = hub_on(memory(100, 1 << 20), limits);
        for _ in 0..9 {
            hub.publish("a", None, "x").await.unwrap();
        }
        let refused = hub.publish("a", None, "x").await.unwrap_err();
        assert_eq!((refused.status(), refused.code()), (503, "buffer_full"));
        assert_eq!(lock(&hub.state).buffered, 9 * frame_len);
    }

    #[tokio::test]
    async fn topic_limit_refuses_new_topics_and_unused_topics_are_forgotten() {
        let hub = hub(10, 1 << 20);
        let signal = Arc::new(Signal::default());
        for t in ["a", "b", "c", "d"] {
            hub.publish(t, None, "x").await.unwrap();
        }
        assert!(hub.publish("e", None, "x").await.is_err());
        // At the limit, topics that exist can still be subscribed to; one new among them
        // refuses the whole subscription, and leaves no topic behind.
        hub.subscribe(&["a".into(), "b".into(), "c".into(), "d".into()], None, &signal).expect("existing topics");
        let refused = hub.subscribe(&["a".into(), "e".into()], None, &signal).map(|_| ()).unwrap_err();
        assert_eq!(refused.code(), "topic_limit");
        assert_eq!(lock(&hub.state).topics.len(), 4);
        let h = self::hub(10, 1 << 20);
        let (id, topics, _) = h.subscribe(&["q".into(), "r".into()], None, &signal).unwrap();
        let topics_held = lock(&h.state).topics.len();
        assert_eq!((topics_held, h.registrations()), (2, 2));
        h.unsubscribe(id, &topics);
        let topics_held = lock(&h.state).topics.len();
        assert_eq!((topics_held, h.registrations()), (0, 0));
    }
}
