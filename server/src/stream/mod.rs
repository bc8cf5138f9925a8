//! The stream machinery: events, from a publish to every stream's next write.
//!
//! - [`hub`]: the sequencer, per-topic bounded windows and wake-ups; publishes are
//!   handed to the store and become visible once it acknowledged them, in id order.
//! - [`subscription`]: a stream's cursor and what it writes next (replay from the store,
//!   the window, live, heartbeats, the goodbye).
//! - [`frame`]: SSE framing, once per event.
//! - [`wire`]: the stream decoded as a client reads it (for test and load clients).
//! - [`id`]: event ids (`<epoch>-<seq>`).
//! - [`names`]: what a topic name and an event type may be.
//! - [`signal`]: the poll-based wake-up flag each stream waits on.
//!
//! Imports run `subscription` → `hub` → `frame` → `id`. This folder may import
//! [`crate::store`] and the crate's leaves (error, metrics); never the front door.

pub mod frame;
pub mod hub;
pub mod id;
pub mod names;
pub mod signal;
pub mod subscription;
pub mod wire;
