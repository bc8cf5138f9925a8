//! The idempotency keys a single-node log remembers: within the dedup window, a publish
//! that repeats a key gets its first append's id back and stores nothing new.
//!
//! A key is *in flight* from its append until the store answers; a repeat meanwhile is
//! refused (the first may still fail), never given a second id. Expiry uses
//! `tokio::time`, so simulations see the same window.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The dedup window JetStream uses by default, and so the single-node logs.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(120);

/// What a key is known as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not within the window: append anew.
    New,
    /// Stored within the window as this id.
    Stored(u64),
    /// An append with this key has not been answered yet.
    InFlight,
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    InFlight(u64),
    Stored { seq: u64, at: Instant },
}

/// Keys seen within the window.
#[derive(Debug)]
pub struct Keys {
    window: Duration,
    entries: BTreeMap<Box<str>, Entry>,
    /// Stored keys in the order they were stored, for expiry.
    stored: VecDeque<(Instant, Box<str>)>,
}

impl Keys {
    /// No keys yet; each is remembered for `window` after it is stored.
    pub fn new(window: Duration) -> Keys {
        Keys { window, entries: BTreeMap::new(), stored: VecDeque::new() }
    }

    /// What `key` is known as at `now`.
    pub fn seen(&mut self, key: &str, now: Instant) -> Seen {
        self.expire(now);
        match self.entries.get(key) {
            None => Seen::New,
            Some(Entry::InFlight(_)) => Seen::InFlight,
            Some(Entry::Stored { seq, .. }) => Seen::Stored(*seq),
        }
    }

    /// `key` was handed to the store as `seq`.
    pub fn begin(&mut self, key: &str, seq: u64) {
        self.entries.insert(key.into(), Entry::InFlight(seq));
    }

    /// The store acknowledged `key`'s append: remembered for the window from `now`.
    pub fn stored(&mut self, key: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            if let Entry::InFlight(seq) = *entry {
                *entry = Entry::Stored { seq, at: now };
                self.stored.push_back((now, key.into()));
            }
        }
    }

    /// The store refused `key`'s append: a retry appends anew.
    pub fn failed(&mut self, key: &str) {
        if matches!(self.entries.get(key), Some(Entry::InFlight(_))) {
            self.entries.remove(key);
        }
    }

    /// A key the store kept from an earlier process, remembered for a whole window from
    /// `now` (its first store time is not trusted across processes' clocks).
    pub fn restore(&mut self, key: &str, seq: u64, now: Instant) {
        self.begin(key, seq);
        self.stored(key, now);
    }

    /// How long a stored key is remembered.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Keys remembered (stored and in flight).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.stored.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            let (at, key) = self.stored.pop_front().expect("checked above");
            if matches!(self.entries.get(&key), Some(Entry::Stored { at: stored_at, .. }) if *stored_at == at) {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_is_in_flight_then_stored_for_the_window_then_new() {
        let mut keys = Keys::new(Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(keys.seen("k", now), Seen::New);
        keys.begin("k", 7);
        assert_eq!(keys.seen("k", now), Seen::InFlight);
        keys.stored("k", now);
        keys.begin("j", 8);
        assert_eq!((keys.len(), keys.is_empty()), (2, false), "one key stored, one in flight");
        keys.stored("j", now + Duration::from_secs(5));
        assert_eq!(keys.seen("k", now + Duration::from_millis(9_999)), Seen::Stored(7));
        assert_eq!(keys.seen("k", now + Duration::from_secs(10)), Seen::New);
        assert_eq!(keys.len(), 1, "an expired key is forgotten, a younger one kept");
        assert_eq!(keys.seen("j", now + Duration::from_secs(15)), Seen::New);
        assert!(keys.is_empty(), "every expired key is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_append_forgets_its_key() {
        let mut keys = Keys::new(Duration::from_secs(10));
        let now = Instant::now();
        keys.begin("k", 3);
        keys.failed("k");
        assert_eq!(keys.seen("k", now), Seen::New);
        keys.begin("k", 4);
        keys.stored("k", now);
        keys.failed("k");
        assert_eq!(keys.seen("k", now), Seen::Stored(4), "a stored key stays");
    }
}
