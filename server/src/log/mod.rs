//! The log the hub follows: it assigns each published event its id, makes it durable, and
//! hands committed events back in id order. The hub has one code path whatever is below.
//!
//! - [`Log`]: the seam. [`Log::append`] answers with the id once the event is durable;
//!   committed events reach the hub's [`Follower::apply`] in id order, so a node shows
//!   only what the log holds, and never id 11 before id 10.
//! - [`local`]: the single-node log: a sequencer over a [`crate::store::Store`] (memory or disk) that
//!   assigns ids itself and applies events as the store acknowledges them, in order.
//! - [`keys`]: the idempotency keys a log remembers for its dedup window.
//! - [`nats`]: cluster mode's log, a NATS JetStream stream many servers share; its
//!   sequence numbers are the ids.
//!
//! The log imports the store and the crate's leaves; framing is the follower's
//! ([`Follower::frame`]), so this layer knows nothing of the SSE wire format.

pub mod keys;
pub mod local;
pub mod nats;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use crate::store::{ReadOutcome, Record, Recovery, StoreError, StoreFuture, TailLimits};

pub use local::LocalLog;

/// A boxed future a log returns.
pub type LogFuture<T> = Pin<Box<dyn Future<Output = Result<T, AppendError>> + Send>>;

/// An event as published, before the log gives it an id.
#[derive(Debug)]
pub struct NewEvent {
    /// Its topic.
    pub topic: Arc<str>,
    /// The `event:` type, if any.
    pub event_type: Option<Box<str>>,
    /// The data, as published.
    pub data: Box<str>,
    /// The publisher's `Idempotency-Key`, if it sent one.
    pub key: Option<Box<str>>,
    /// Whatever the publisher holds until the append is answered (the hub's reserved
    /// buffer bytes): the log keeps it with the event and drops it once the event has
    /// been applied or refused.
    pub hold: Hold,
}

/// Something dropped when an append has been answered.
pub struct Hold(Option<Box<dyn Send + Sync>>);

impl Hold {
    /// Holds `value` until the append is answered.
    pub fn new(value: impl Send + Sync + 'static) -> Hold {
        Hold(Some(Box::new(value)))
    }

    /// Holds nothing.
    pub fn none() -> Hold {
        Hold(None)
    }
}

impl Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Hold(..)" } else { "Hold(none)" })
    }
}

/// A durable append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The event's sequence number.
    pub seq: u64,
    /// The idempotency key was seen within the dedup window: nothing new was stored and
    /// `seq` is the first append's.
    pub duplicate: bool,
}

/// Why an append was not made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The store could not write it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An append with the same idempotency key is still in flight.
    #[error("a publish with this idempotency key is still in flight")]
    KeyInFlight,
}

/// Who follows a log: the hub.
pub trait Follower: Send + Sync {
    /// The event as streams send it, framed once, for id `seq`.
    fn frame(&self, seq: u64, event: &NewEvent) -> Bytes;

    /// Committed events, in increasing id order across calls: each becomes visible.
    fn apply(&self, records: Vec<Record>);

    /// The log removed events up to `upto` before they were applied: cursors there must
    /// read the log, which says whether they lost any.
    fn skipped(&self, upto: u64);
}

/// A history of events that assigns their ids.
pub trait Log: Send + Sync + Debug + 'static {
    /// Starts following: what survived (epoch, the position the follower starts at and
    /// the newest events for the windows). Committed events after that position go to
    /// `follower`. Called once, before the first append.
    fn start(&self, follower: Weak<dyn Follower>, tail: TailLimits) -> Recovery;

    /// Appends `event`; the future answers once it is durable under the log's policy.
    fn append(&self, event: NewEvent) -> LogFuture<Appended>;

    /// Events on `topics` with ids in `(after, upto]`, as [`crate::store::Store::read`].
    fn read(&self, topics: Vec<Arc<str>>, after: u64, upto: u64) -> StoreFuture<ReadOutcome>;

    /// Highest id retention removed from `topic`: a cursor below it lost events.
    fn trimmed_upto(&self, topic: &str) -> u64;

    /// The highest id the log has assigned, when it alone assigns them; a resume id
    /// above it is unknown. `None` for a log other processes append to too.
    fn assigned_upto(&self) -> Option<u64>;

    /// Whether appends are currently succeeding (`/readyz` says 503 when not).
    fn is_healthy(&self) -> bool;

    /// Makes everything appended durable and lets go of what the log holds.
    fn close(&self) -> StoreFuture<()>;
}
