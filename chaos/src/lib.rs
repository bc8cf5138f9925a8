//! `sse-chaos`: load generation, benchmarks and real chaos runs against a running
//! `sse-server`.
//!
//! Folders, from what runs down to what it uses:
//! - [`real`]: the real backend for plans behind Toxiproxy (process control, toxics read
//!   back, the shared oracle, leak checks), swarms and the soak.
//! - [`browser`]: real browsers (headless Chromium and Firefox over WebDriver) whose own
//!   `EventSource` is the client, recorded for the oracle.
//! - [`bench`](mod@bench): the benchmarks: idle memory per stream, fan-out, publishes, resume herds.
//! - [`load`]: what drives and measures load: the raw stream client, the publisher and
//!   `/metrics` reader, the TLS connector, `/proc` readings and percentiles.
//!
//! Imports run `browser` → `real`, `bench` → `load`.

pub mod bench;
pub mod browser;
pub mod load;
pub mod real;
