//! Event ids: `<epoch>-<seq>`, opaque to clients, ordered by `seq` within an epoch.
//!
//! The epoch names one history of events. A resume id from another epoch (a wiped or
//! replaced store, a restarted in-memory server) cannot be honoured and earns the client
//! an explicit reset notice instead of a replay of the wrong history.

use std::fmt;

/// One event's identity: which history it belongs to and its place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId {
    /// The history this id belongs to.
    pub epoch: u32,
    /// Position in the history; strictly increasing across all topics.
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{}", self.epoch, self.seq)
    }
}

impl EventId {
    /// Parses the textual form; `None` for anything we did not produce.
    pub fn parse(text: &str) -> Option<EventId> {
        let (epoch, seq) = text.split_once('-')?;
        // Eight lowercase hex digits, as Display writes them (`from_str_radix` alone
        // would also take upper case and a leading `+`).
        if epoch.len() != 8 || !epoch.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        if seq.is_empty() || seq.len() > 20 {
            return None;
        }
        if !seq.bytes().all(|b| b.is_ascii_digit()) || (seq.len() > 1 && seq.starts_with('0')) {
            return None;
        }
        let epoch = u32::from_str_radix(epoch, 16).ok()?;
        let seq = seq.parse().ok()?;
        Some(EventId { epoch, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_forms() {
        let id = EventId { epoch: 0xdead_beef, seq: 42 };
        assert_eq!(id.to_string(), "deadbeef-42");
        assert_eq!(EventId::parse("deadbeef-42"), Some(id));
        for bad in [
            "",
            "42",
            "deadbeef-",
            "deadbeef-042",
            "beef-1",
            "deadbeef-1x",
            "zzzzzzzz-1",
            "deadbeef-99999999999999999999",
            "DEADBEEF-42",
            "+eadbeef-42",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
    }
}
