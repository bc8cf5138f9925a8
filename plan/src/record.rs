//! What a backend records for the oracle, the same whatever ran the plan: the
//! publishers' acknowledgements and each client's events and reset notices, with their
//! times from the run's start.

use std::time::Duration;

/// An event the server acknowledged with `201`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// When the `201` arrived.
    pub at: Duration,
    /// When the publish was sent: an event sent after a client's stream announced its
    /// position was stored after that position.
    pub sent: Duration,
    pub id: String,
    pub topic: String,
    pub data: String,
}

/// An event as a client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub at: Duration,
    pub id: String,
    pub data: String,
}

/// A client's part of the plan's `cut`, the same in every backend: with `left` bytes of
/// its budget left and `read` bytes just read, how many of them it keeps, what is left
/// after, and whether the link is cut now (the rest is never seen; the decoder never
/// dispatches the half event before it).
pub fn cut_step(left: Option<usize>, read: usize) -> (usize, Option<usize>, bool) {
    match left {
        Some(left) if left <= read => (left, None, true),
        Some(left) => (read, Some(left - read), false),
        None => (read, None, false),
    }
}

/// What happened on one client, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Event(Received),
    Reset { at: Duration, reason: String },
}

#[cfg(test)]
mod tests {
    use super::cut_step;

    #[test]
    fn a_cut_keeps_the_bytes_before_it_once() {
        assert_eq!(cut_step(None, 100), (100, None, false));
        assert_eq!(cut_step(Some(300), 100), (100, Some(200), false));
        assert_eq!(cut_step(Some(40), 100), (40, None, true));
        assert_eq!(cut_step(Some(100), 100), (100, None, true));
    }
}
