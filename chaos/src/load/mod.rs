//! What drives and measures load, shared by the benchmarks and the real chaos runs.
//!
//! - [`stream_client`]: a raw HTTP/1.1 event-stream client that scans `data:` lines.
//! - [`publisher`]: a keep-alive HTTP/1.1 publisher and a `/metrics` reader.
//! - [`tls_client`]: a TLS connector trusting the test CA, for TLS benchmarks.
//! - [`proc_stats`]: another process's RSS and CPU time from `/proc`.
//! - [`stats`]: percentiles of latency samples.

pub mod proc_stats;
pub mod publisher;
pub mod stats;
pub mod stream_client;
pub mod tls_client;
