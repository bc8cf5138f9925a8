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
        inner.topics.retain(|_, log| !log.events.is_empty() || log.trimmed_upto > 0);
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

    /// Every retained event, in id order (for tests and the simulation oracle).
    pub fn events(&self) -> Vec<Record> {
        let inner = lock(&self.inner);
        let mut all: Vec<Record> = inner
            .topics
            .iter()
            .flat_map(|(topic, log)| {
                log.events.iter().map(|(seq, frame)| Record {
                    seq: *seq,
                    topic: topic.clone(),
                    frame: frame.clone(),
                    key: None,
                })
            })
            .collect();
        all.sort_unstable_by_key(|r| r.seq);
        all
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
