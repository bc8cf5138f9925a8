//! The in-memory store: each topic keeps what its window keeps (by count and bytes), so
//! nothing outlives the process. Tests and simulations use it; a simulation can keep one
//! across server boots and [`MemoryStore::crash`] it, which forgets what an `interval`
//! policy had not synced yet, as a power cut would.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{
    merge_slices, newest_within, take_slice, FsyncPolicy, ReadOutcome, Record, Recovery, Store, StoreError,
    StoreFuture, TailLimits, SEQ_RESERVATION,
};

/// A store in memory; clones share it.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    policy: FsyncPolicy,
}

#[derive(Debug)]
struct Inner {
    epoch: u32,
    keep_events: usize,
    keep_bytes: usize,
    topics: BTreeMap<Arc<str>, Log>,
    last_seq: u64,
    synced_upto: u64,
    /// Ids up to here may have been handed out (see [`SEQ_RESERVATION`]).
    reserved: u64,
    /// The highest id this boot started above or appended: every id it may have
    /// acknowledged lies at or below it. A clean close narrows the reservation down to it
    /// and no further; each boot starts it afresh from the floor, as a process would.
    handed_out: u64,
    sync_pending: bool,
    /// Idempotency keys with their ids, in the order stored, and when.
    keys: VecDeque<(Instant, u64, Arc<str>)>,
    /// How long keys are kept: the window the last recovery asked for.
    keys_within: Duration,
}

#[derive(Debug, Default)]
struct Log {
    events: VecDeque<(u64, Bytes)>,
    bytes: usize,
    trimmed_upto: u64,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryStore {
    /// An empty store for history `epoch`, keeping `keep_events` / `keep_bytes` per topic.
    pub fn new(epoch: u32, keep_events: usize, keep_bytes: usize, policy: FsyncPolicy) -> MemoryStore {
        let inner = Inner {
            epoch,
            keep_events: keep_events.max(1),
            keep_bytes,
            topics: BTreeMap::new(),
            last_seq: 0,
            synced_upto: 0,
            reserved: 0,
            handed_out: 0,
            sync_pending: false,
            keys: VecDeque::new(),
            keys_within: Duration::ZERO,
        };
        MemoryStore { inner: Arc::new(Mutex::new(inner)), policy }
    }

    /// A simulated power cut: forgets every event not synced yet. Returns their ids'
    /// sequence numbers.
    pub fn crash(&self) -> Vec<u64> {
        let mut inner = lock(&self.inner);
        let synced = inner.synced_upto;
        let mut forgotten = Vec::new();
        for log in inner.topics.values_mut() {
            while log.events.back().is_some_and(|(seq, _)| *seq > synced) {
                let (seq, frame) = log.events.pop_back().expect("checked above");
                log.bytes -= frame.len();
                forgotten.push(seq);
            }
        }
        inner.keys.retain(|(_, seq, _)| *seq <= synced);
        forgotten.sort_unstable();
        inner.last_seq = synced;
        inner.sync_pending = false;
        forgotten
    }

    /// Marks everything appended so far as synced.
    pub fn sync(&self) {
        let mut inner = lock(&self.inner);
        inner.synced_upto = inner.last_seq;
        inner.sync_pending = false;
    }
}

impl Inner {
    fn forget_keys_before(&mut self, now: Instant) {
        while self.keys.front().is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= self.keys_within) {
            self.keys.pop_front();
        }
    }
}

impl Store for MemoryStore {
    fn recover(&self, limits: TailLimits) -> super::Recovery {
        let mut inner = lock(&self.inner);
        // What a disk store keeps across a crash: the events synced and the reservation.
        let floor = inner.last_seq.max(inner.reserved);
        inner.handed_out = floor;
        let per_topic = inner
            .topics
            .iter()
            .map(|(topic, log)| {
                let records = log
                    .events
                    .iter()
                    .map(|(seq, frame)| Record { seq: *seq, topic: topic.clone(), frame: frame.clone(), key: None })
                    .collect();
                (topic.clone(), records)
            })
            .collect();
        inner.keys_within = limits.keys_within;
        inner.forget_keys_before(Instant::now());
        let keys = inner.keys.iter().map(|(_, seq, key)| (key.clone(), *seq)).collect();
        Recovery { epoch: inner.epoch, floor, tail: newest_within(per_topic, limits), keys }
    }

    fn append(&self, record: Record) -> StoreFuture<()> {
        let mut inner = lock(&self.inner);
        if let Some(key) = record.key {
            let now = Instant::now();
            inner.forget_keys_before(now);
            inner.keys.push_back((now, record.seq, key));
        }
        let (keep_events, keep_bytes) = (inner.keep_events, inner.keep_bytes);
        let log = inner.topics.entry(record.topic).or_default();
        log.bytes += record.frame.len();
        log.events.push_back((record.seq, record.frame));
        while log.events.len() > 1 && (log.events.len() > keep_events || log.bytes > keep_bytes) {
            let (seq, frame) = log.events.pop_front().expect("more than one event");
            log.bytes -= frame.len();
            log.trimmed_upto = seq;
        }
        inner.last_seq = record.seq;
        inner.handed_out = inner.handed_out.max(record.seq);
        if record.seq > inner.reserved {
            inner.reserved = record.seq + SEQ_RESERVATION;
        }
        match self.policy {
            FsyncPolicy::Always => inner.synced_upto = record.seq,
            FsyncPolicy::Interval(every) if !inner.sync_pending => {
                inner.sync_pending = true;
                let store = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(every).await;
                    if lock(&store.inner).sync_pending {
                        store.sync();
                    }
                });
            }
            FsyncPolicy::Interval(_) => {}
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn read(&self, topics: Vec<Arc<str>>, after: u64, upto: u64) -> StoreFuture<ReadOutcome> {
        let inner = lock(&self.inner);
        let mut slices = Vec::with_capacity(topics.len());
        for topic in &topics {
            let Some(log) = inner.topics.get(topic) else { continue };
            if log.trimmed_upto > after {
                return Box::pin(std::future::ready(Ok(ReadOutcome::Evicted)));
            }
            let from = log.events.partition_point(|(seq, _)| *seq <= after);
            slices.push(take_slice(log.events.range(from..).take_while(|(seq, _)| *seq <= upto).cloned()));
        }
        Box::pin(std::future::ready(Ok(merge_slices(slices, upto))))
    }

    fn trimmed_upto(&self, topic: &str) -> u64 {
        lock(&self.inner).topics.get(topic).map_or(0, |log| log.trimmed_upto)
    }

    fn is_healthy(&self) -> bool {
        true
    }

    fn close(&self) -> StoreFuture<()> {
        let mut inner = lock(&self.inner);
        inner.synced_upto = inner.last_seq;
        // Never below an id this boot may have acknowledged or started above (a crash
        // before this boot may have taken back events whose ids clients still hold).
        inner.reserved = inner.handed_out.max(inner.last_seq);
        inner.sync_pending = false;
        Box::pin(std::future::ready(Ok::<(), StoreError>(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Syncs only when told to (`sync`): nothing is synced by time in these tests.
    const BY_HAND: FsyncPolicy = FsyncPolicy::Interval(Duration::from_secs(3600));
    const EVERYTHING: TailLimits =
        TailLimits { events: 100, bytes: 1 << 20, total_bytes: 1 << 20, keys_within: Duration::from_secs(60) };

    fn record(seq: u64, topic: &str, key: Option<&str>) -> Record {
        // Ten bytes each, so byte limits count events.
        Record { seq, topic: Arc::from(topic), frame: Bytes::from(format!("{seq:>9}\n")), key: key.map(Arc::from) }
    }

    async fn append(store: &MemoryStore, seq: u64, topic: &str, key: Option<&str>) {
        store.append(record(seq, topic, key)).await.unwrap();
    }

    /// The ids a topic holds past its trim point, and the trim point.
    async fn held(store: &MemoryStore, topic: &str) -> (Vec<u64>, u64) {
        let trimmed = store.trimmed_upto(topic);
        match store.read(vec![Arc::from(topic)], trimmed, u64::MAX).await.unwrap() {
            ReadOutcome::Events { events, .. } => (events.iter().map(|(seq, _)| *seq).collect(), trimmed),
            ReadOutcome::Evicted => panic!("evicted from its own trim point"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_power_cut_forgets_exactly_what_was_not_synced() {
        let store = MemoryStore::new(7, 100, 1 << 20, BY_HAND);
        store.recover(EVERYTHING); // As a boot does: it sets how long keys are kept.
        append(&store, 1, "a", Some("k1")).await;
        append(&store, 2, "b", None).await;
        store.sync();
        append(&store, 3, "a", Some("k3")).await;
        append(&store, 4, "b", None).await;
        append(&store, 5, "a", None).await;
        assert_eq!(store.crash(), [3, 4, 5], "the unsynced ids, in order");
        assert_eq!(held(&store, "a").await, (vec![1], 0));
        assert_eq!(held(&store, "b").await, (vec![2], 0));
        let recovered = store.recover(EVERYTHING);
        assert_eq!(recovered.keys, [(Arc::from("k1"), 1)], "a forgotten event's key is forgotten with it");
        assert_eq!(recovered.tail.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        // After a sync a power cut takes nothing.
        append(&store, 6, "a", None).await;
        store.sync();
        assert_eq!(store.crash(), Vec::<u64>::new());
        assert_eq!(held(&store, "a").await, (vec![1, 6], 0));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_power_cut_the_byte_window_counts_only_what_is_left() {
        // Three 10-byte events fit the window.
        let store = MemoryStore::new(7, 100, 30, BY_HAND);
        append(&store, 1, "t", None).await;
        append(&store, 2, "t", None).await;
        store.sync();
        append(&store, 3, "t", None).await;
        assert_eq!(store.crash(), [3]);
        append(&store, 4, "t", None).await;
        assert_eq!(held(&store, "t").await, (vec![1, 2, 4], 0), "30 bytes: all three fit");
        append(&store, 5, "t", None).await;
        assert_eq!(held(&store, "t").await, (vec![2, 4, 5], 1), "40 bytes: the oldest goes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_power_cut_keeps_the_trim_point_of_a_topic_it_empties() {
        let store = MemoryStore::new(7, 1, 1 << 20, BY_HAND);
        append(&store, 1, "t", None).await;
        store.sync();
        append(&store, 2, "t", None).await;
        assert_eq!(store.crash(), [2]);
        assert_eq!(held(&store, "t").await, (vec![], 1));
        assert!(matches!(store.read(vec![Arc::from("t")], 0, 9).await.unwrap(), ReadOutcome::Evicted));
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_restarts_above_the_reservation_and_reserves_again_only_past_it() {
        let store = MemoryStore::new(7, 100, 1 << 20, BY_HAND);
        append(&store, 1, "t", None).await;
        let reserved = 1 + SEQ_RESERVATION;
        append(&store, reserved, "t", None).await;
        store.crash();
        assert_eq!(store.recover(EVERYTHING).floor, reserved, "the last reserved id is still inside the reservation");
        append(&store, reserved + 1, "t", None).await;
        store.crash();
        assert_eq!(store.recover(EVERYTHING).floor, reserved + 1 + SEQ_RESERVATION, "one id past it reserves anew");
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_policy_syncs_what_was_appended_once_its_interval_is_up() {
        let store = MemoryStore::new(7, 100, 1 << 20, FsyncPolicy::Interval(Duration::from_millis(100)));
        append(&store, 1, "t", None).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        append(&store, 2, "t", None).await;
        tokio::time::sleep(Duration::from_millis(49)).await;
        assert_eq!(store.crash(), [1, 2], "1 ms before the interval is up nothing is synced");
        tokio::time::sleep(Duration::from_millis(1)).await; // that interval ends with nothing to sync
        append(&store, 3, "t", None).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        append(&store, 4, "t", None).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::task::yield_now().await; // the sync task wakes at the same instant
        assert_eq!(store.crash(), Vec::<u64>::new(), "the interval that started at 3 synced 4 too");
        append(&store, 5, "t", None).await;
        assert_eq!(store.crash(), [5], "a new interval starts with the next append");
    }

    #[tokio::test(start_paused = true)]
    async fn idempotency_keys_are_kept_for_the_window_recovery_asks_for_and_no_longer() {
        let store = MemoryStore::new(7, 100, 1 << 20, FsyncPolicy::Always);
        append(&store, 1, "t", Some("k")).await;
        tokio::time::advance(Duration::from_millis(59_999)).await;
        assert_eq!(store.recover(EVERYTHING).keys, [(Arc::from("k"), 1)], "a millisecond inside the window");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(store.recover(EVERYTHING).keys, [], "at the window's end");
    }
}
