//! `sse-chaos`: load generation, benchmarks and real chaos runs against a running
//! `sse-server`.
//!
//! Modules:
//! - [`real`]: real chaos scenarios behind Toxiproxy (process control, toxics read back,
//!   oracle, leak checks).
//! - [`idle`]: open many idle streams and measure the server's memory per stream.
//! - [`fanout`]: many subscribers, a paced publisher; deliveries per server CPU-second and
//!   delivery latency percentiles.
//! - [`publish_bench`]: acknowledged publishes per second and their latency.
//! - [`resume_bench`]: a reconnect herd resuming a topic's history after a restart.
//! - [`proc_stats`]: another process's RSS and CPU time from `/proc`.
//! - [`stream_client`]: a raw HTTP/1.1 event-stream client that scans `data:` lines.
//! - [`publisher`]: a keep-alive HTTP/1.1 publisher and a `/metrics` reader.
//! - [`stats`]: percentiles of latency samples.
//! - [`tls_client`]: a TLS connector trusting the test CA, for TLS benchmarks.

pub mod fanout;
pub mod idle;
pub mod proc_stats;
pub mod publish_bench;
pub mod publisher;
pub mod real;
pub mod resume_bench;
pub mod stats;
pub mod stream_client;
pub mod tls_client;
