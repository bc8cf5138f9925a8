//! Real chaos runs: the production binary behind a real Toxiproxy.
//!
//! - [`toxiproxy`]: a typed async client for Toxiproxy's API that reads every toxic back.
//! - [`processes`]: the Toxiproxy server and `sse-server` children, signals via `nix`.
//! - [`cgroup`]: a memory cgroup for the server under test.
//! - [`subscriber`]: an EventSource-like client that resumes with `Last-Event-ID`.
//! - [`scenarios`]: the scenarios, their oracle and leak checks, and their reports.

pub mod cgroup;
pub mod processes;
pub mod scenarios;
pub mod subscriber;
pub mod toxiproxy;
