//! The benchmarks `sse-chaos` runs (the README's results table quotes them).
//!
//! - [`idle`]: open many idle streams and measure the server's memory per stream.
//! - [`fanout`]: many subscribers, a paced publisher; deliveries per server CPU-second and
//!   delivery latency percentiles.
//! - [`publish`]: acknowledged publishes per second and their latency.
//! - [`resume`]: a reconnect herd resuming a topic's history after a restart.
//! - [`cluster_idle`]: cluster mode: many idle streams over several server processes,
//!   held with heartbeats; summed server memory per stream.
//! - [`failover`]: cluster mode: kill -9 of the stream's leader; time until publishes are
//!   acknowledged again and every subscriber has caught up.

pub mod cluster_idle;
pub mod failover;
pub mod fanout;
pub mod idle;
pub mod publish;
pub mod resume;
