//! What a backend records for the oracle, the same whatever ran the plan: the
//! publishers' acknowledgements and each client's events and reset notices, with their
//! times from the run's start.

use std::time::Duration;

/// An event the server acknowledged with `201`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub at: Duration,
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

/// What happened on one client, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Event(Received),
    Reset { at: Duration, reason: String },
}
