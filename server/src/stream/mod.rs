//! The stream machinery: events, from a publish to every stream's next write.
//!
//! - [`hub`]: per-topic bounded windows and wake-ups; publishes are appended to the
//!   [`crate::log`], which assigns their ids, and become visible as the log hands them
//!   back, in id order.
//! - [`subscription`]: a stream's cursor and what it writes next (replay from the store,
//!   the window, live, heartbeats, the goodbye).
//! - [`frame`]: SSE framing, once per event.
//! - [`wire`]: the stream decoded as a client reads it (for test and load clients).
//! - [`id`]: event ids (`<epoch>-<seq>`).
//! - [`names`]: what a topic name and an event type may be.
//! - [`signal`]: the poll-based wake-up flag each stream waits on.
//! - [`pacing`]: when a topic wakes its streams (`--coalesce`: at once, fixed, auto).
//!
//! Imports run `subscription` → `hub` → `frame` → `id`. This folder may import
//! [`crate::log`], [`crate::store`] and the crate's leaves (error, metrics); never the
//! front door.

pub mod frame;
pub mod hub;
pub mod id;
pub mod names;
pub mod pacing;
pub mod signal;
pub mod subscription;
pub mod wire;
