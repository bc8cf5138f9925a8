//! The storage seam: where published events live beyond the in-memory windows, and what
//! survives a restart.
//!
//! - [`Store`]: the trait the hub talks to. Appends are handed over in id order and
//!   acknowledged once durable under the store's policy; reads serve resumes that reach
//!   past a topic's window; [`Recovery`] is what a new process starts from.
//! - [`memory`]: the window only, for tests and simulations; with `interval` syncing it
//!   forgets what was not synced when a simulated crash happens.
//! - `disk`: the embedded default, on redb. `writer` is its group-commit thread, `tables`
//!   the file's tables and the state both share, `codec` an event's checksummed bytes,
//!   `backend` the file under redb with its test fault switch. Imports run
//!   `disk` → `writer` → `tables` → `codec`, `backend`. `testing` opens disk stores for
//!   the tests of `disk` and of `writer` (in `writer_tests.rs`).
//!
//! The store sits below the streams: it imports only its own modules and the crate's
//! leaves.
//!
//! Sequence numbers are never reused: a store hands out a *floor* at recovery, and every
//! id a previous process may have shown a client lies at or below it.

mod backend;
mod codec;
mod disk;
pub mod memory;
mod tables;
#[cfg(test)]
mod testing;
mod writer;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use backend::WriteFaults;
pub use disk::{DiskOptions, DiskStore};
pub use memory::MemoryStore;

/// Most events one store read returns (a catch-up step).
pub const READ_MAX_EVENTS: usize = 128;
/// Most framed bytes one store read returns (at least one event always).
pub const READ_MAX_BYTES: usize = 64 << 10;
/// Sequence numbers reserved ahead of the last one written. The reservation is made
/// durable before any id past it is acknowledged, so a restart after a crash starts above
/// every id that could have been shown, even under `--fsync interval`.
pub const SEQ_RESERVATION: u64 = 1 << 16;

/// A boxed future a store returns.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// One event as stored: its sequence number, topic and SSE frame (which carries the id).
#[derive(Debug, Clone)]
pub struct Record {
    /// The event's sequence number.
    pub seq: u64,
    /// Its topic.
    pub topic: Arc<str>,
    /// The framed event, exactly as streams send it.
    pub frame: Bytes,
    /// The publisher's idempotency key, kept for the dedup window.
    pub key: Option<Arc<str>>,
}

/// What a store read found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Events in id order, and how far the read is complete: there is no retained event
    /// on the topics between the cursor and `complete_upto` that is not in `events`.
    Events { events: Vec<(u64, Bytes)>, complete_upto: u64 },
    /// Retention removed events the cursor has not seen.
    Evicted,
}

/// What a new process starts from.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The history these ids belong to.
    pub epoch: u32,
    /// New events get sequence numbers above this.
    pub floor: u64,
    /// The newest retained events, in id order, within the limits asked for.
    pub tail: Vec<Record>,
    /// Idempotency keys stored within [`TailLimits::keys_within`], with their ids.
    pub keys: Vec<(Arc<str>, u64)>,
}

/// How much of a topic's newest history [`Store::recover`] hands back for the windows.
#[derive(Debug, Clone, Copy)]
pub struct TailLimits {
    /// Events per topic.
    pub events: usize,
    /// Framed bytes per topic.
    pub bytes: usize,
    /// Framed bytes over all topics.
    pub total_bytes: usize,
    /// Idempotency keys stored less than this long ago are handed back.
    pub keys_within: Duration,
}

/// When an acknowledged publish is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `201` after the event is synced to disk; concurrent publishes share one sync.
    Always,
    /// `201` after the event is written; synced at least this often. A crash of the
    /// machine (or a write error) can lose up to this much acknowledged history.
    Interval(Duration),
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            None if text == "always" => Ok(FsyncPolicy::Always),
            Some(("interval", every)) => match humantime::parse_duration(every) {
                Ok(every) if !every.is_zero() => Ok(FsyncPolicy::Interval(every)),
                _ => Err("the interval must be a duration above zero, like interval:100ms".to_owned()),
            },
            _ => Err("expected `always` or `interval:<duration>`".to_owned()),
        }
    }
}

/// Retention per topic; whichever limit is reached first removes the oldest events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events kept per topic.
    pub events: u64,
    /// Framed bytes kept per topic.
    pub bytes: u64,
    /// Age after which an event is removed.
    pub age: Duration,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The data directory is held by another process.
    #[error("the data directory {0} is in use by another process (its LOCK file is held)")]
    Locked(String),
    /// The disk has no room left.
    #[error("the disk is full: {0}")]
    Full(String),
    /// An I/O or database error.
    #[error("{0}")]
    Io(String),
    /// The store's files are damaged beyond what recovery repairs.
    #[error("the event store is corrupt: {0}")]
    Corrupt(String),
    /// The store has been closed.
    #[error("the event store is closed")]
    Closed,
    /// The store did not answer in time: the event may or may not have been stored.
    #[error("the event store did not answer in time: {0}")]
    Uncertain(String),
}

impl StoreError {
    /// Classifies an I/O error (a full disk gets its own variant).
    pub fn io(error: &std::io::Error) -> StoreError {
        if error.kind() == std::io::ErrorKind::StorageFull {
            StoreError::Full(error.to_string())
        } else {
            StoreError::Io(error.to_string())
        }
    }
}

/// Where events live beyond the windows. Implementations must not block the caller:
/// [`Store::append`] only queues, the futures do the waiting.
pub trait Store: Send + Sync + Debug + 'static {
    /// What survived: the epoch, the floor for new ids and the newest events per topic.
    /// Called once, before the first append.
    fn recover(&self, tail: TailLimits) -> Recovery;

    /// Queues an event; the future completes once it is durable under the store's policy.
    /// Calls come in increasing `seq` order.
    fn append(&self, record: Record) -> StoreFuture<()>;

    /// Events on `topics` with ids in `(after, upto]`, in id order, at most
    /// [`READ_MAX_EVENTS`] / [`READ_MAX_BYTES`] at a time.
    fn read(&self, topics: Vec<Arc<str>>, after: u64, upto: u64) -> StoreFuture<ReadOutcome>;

    /// Highest id that retention (or a corruption cut) removed from `topic`; a cursor
    /// below it has lost events.
    fn trimmed_upto(&self, topic: &str) -> u64;

    /// Whether writes are currently succeeding (`/readyz` says 503 when not).
    fn is_healthy(&self) -> bool;

    /// Makes everything appended durable and releases the store's files.
    fn close(&self) -> StoreFuture<()>;
}

/// One topic's part of a read: its events in the range (id order) and whether the read
/// stopped early at a limit.
pub(crate) struct TopicSlice {
    pub events: Vec<(u64, Bytes)>,
    pub cut: bool,
}

/// Merges per-topic slices into one batch in id order within the read limits, and says up
/// to where the batch is complete.
pub(crate) fn merge_slices(slices: Vec<TopicSlice>, upto: u64) -> ReadOutcome {
    let mut complete_upto = upto;
    for slice in &slices {
        if slice.cut {
            if let Some(&(last, _)) = slice.events.last() {
                complete_upto = complete_upto.min(last);
            }
        }
    }
    let mut events: Vec<(u64, Bytes)> =
        slices.into_iter().flat_map(|s| s.events).filter(|(seq, _)| *seq <= complete_upto).collect();
    events.sort_unstable_by_key(|(seq, _)| *seq);
    let keep = fitting(&events, READ_MAX_EVENTS, READ_MAX_BYTES);
    if keep < events.len() {
        events.truncate(keep);
        complete_upto = events.last().map_or(complete_upto, |(seq, _)| *seq);
    }
    ReadOutcome::Events { events, complete_upto }
}

/// How many of `frames` (in order) fit one write or read step: at most `max_events`, and
/// at most `max_bytes` unless the first alone is larger (at least one is always taken).
pub fn fitting<T>(frames: &[(T, Bytes)], max_events: usize, max_bytes: usize) -> usize {
    let mut bytes = 0;
    frames
        .iter()
        .take(max_events)
        .take_while(|(_, frame)| {
            bytes += frame.len();
            bytes == frame.len() || bytes <= max_bytes
        })
        .count()
}

/// Takes events from an id-ordered iterator of one topic within the read limits.
pub(crate) fn take_slice(iter: impl Iterator<Item = (u64, Bytes)>) -> TopicSlice {
    let (mut events, mut bytes, mut cut) = (Vec::new(), 0, false);
    for (seq, frame) in iter {
        if events.len() == READ_MAX_EVENTS || (!events.is_empty() && bytes + frame.len() > READ_MAX_BYTES) {
            cut = true;
            break;
        }
        bytes += frame.len();
        events.push((seq, frame));
    }
    TopicSlice { events, cut }
}

/// Picks each topic's newest events within `limits`, newest topics' events first when the
/// total runs out; returns them in id order.
pub(crate) fn newest_within(mut per_topic: BTreeMap<Arc<str>, Vec<Record>>, limits: TailLimits) -> Vec<Record> {
    let mut total = 0usize;
    let mut tail = Vec::new();
    for records in per_topic.values_mut() {
        let (mut count, mut bytes) = (0usize, 0usize);
        while let Some(record) = records.pop() {
            let len = record.frame.len();
            if count == limits.events || bytes + len > limits.bytes || total + len > limits.total_bytes {
                break;
            }
            count += 1;
            bytes += len;
            total += len;
            tail.push(record);
        }
    }
    tail.sort_unstable_by_key(|r| r.seq);
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, len: usize) -> (u64, Bytes) {
        (seq, Bytes::from(vec![b'x'; len]))
    }

    #[test]
    fn fsync_policies_parse_and_bad_ones_say_why() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("interval:100ms".parse(), Ok(FsyncPolicy::Interval(Duration::from_millis(100))));
        assert!("interval:0s".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn a_merged_read_is_complete_only_up_to_the_earliest_cut() {
        let a = TopicSlice { events: vec![ev(1, 1), ev(4, 1)], cut: true };
        let b = TopicSlice { events: vec![ev(2, 1), ev(5, 1), ev(9, 1)], cut: false };
        let ReadOutcome::Events { events, complete_upto } = merge_slices(vec![a, b], 20) else { panic!() };
        assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(complete_upto, 4, "topic a may hold more after 4");
    }

    /// Topic "a" has events 1, 3, 5, 7 and "b" 2, 4, 6 (each `len` bytes).
    fn two_topics(len: usize) -> BTreeMap<Arc<str>, Vec<Record>> {
        let record = |seq: u64, topic: &str| Record { seq, topic: Arc::from(topic), frame: ev(seq, len).1, key: None };
        BTreeMap::from([
            (Arc::from("a"), [1, 3, 5, 7].map(|seq| record(seq, "a")).into()),
            (Arc::from("b"), [2, 4, 6].map(|seq| record(seq, "b")).into()),
        ])
    }

    fn seqs(tail: Vec<Record>) -> Vec<u64> {
        tail.into_iter().map(|r| r.seq).collect()
    }

    #[test]
    fn the_recovered_tail_keeps_each_topics_newest_within_every_limit() {
        let limits =
            |events, bytes, total_bytes| TailLimits { events, bytes, total_bytes, keys_within: Duration::ZERO };
        let ample = 1 << 20;
        assert_eq!(seqs(newest_within(two_topics(10), limits(2, ample, ample))), [4, 5, 6, 7], "two events a topic");
        assert_eq!(seqs(newest_within(two_topics(10), limits(9, 30, ample))), [2, 3, 4, 5, 6, 7], "30 bytes a topic");
        assert_eq!(seqs(newest_within(two_topics(10), limits(9, ample, 50))), [1, 3, 5, 6, 7], "50 bytes in all");
        assert_eq!(seqs(newest_within(two_topics(10), limits(9, ample, ample))), [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_merged_read_that_fits_is_complete_up_to_the_end_of_the_range() {
        let a = TopicSlice { events: vec![ev(2, 1), ev(6, 1)], cut: false };
        let ReadOutcome::Events { events, complete_upto } = merge_slices(vec![a], 30) else { panic!() };
        assert_eq!((events.len(), complete_upto), (2, 30), "nothing more lies in 7..=30");
    }

    #[test]
    fn a_topics_slice_stops_at_the_event_limit_even_when_bytes_remain() {
        let slice = take_slice((0..READ_MAX_EVENTS as u64 + 5).map(|seq| ev(seq, 1)));
        assert_eq!((slice.events.len(), slice.cut), (READ_MAX_EVENTS, true));
        let slice = take_slice((0..3).map(|seq| ev(seq, READ_MAX_BYTES / 2)));
        assert_eq!((slice.events.len(), slice.cut), (2, true), "the third would pass the byte limit");
        let slice = take_slice((0..3).map(|seq| ev(seq, 1)));
        assert_eq!((slice.events.len(), slice.cut), (3, false));
    }

    #[test]
    fn a_merged_read_respects_the_byte_limit_but_returns_one_event_at_least() {
        let big = TopicSlice { events: vec![ev(3, READ_MAX_BYTES * 2), ev(7, 10)], cut: false };
        let ReadOutcome::Events { events, complete_upto } = merge_slices(vec![big], 9) else { panic!() };
        assert_eq!((events.len(), complete_upto), (1, 3));
    }
}
