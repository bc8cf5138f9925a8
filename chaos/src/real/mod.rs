//! Real chaos runs: the production binary behind a real Toxiproxy.
//!
//! - [`toxiproxy`]: a typed async client for Toxiproxy's API that reads every toxic back.
//! - [`processes`]: the Toxiproxy server and `sse-server` children, signals via `nix`.
//! - [`cgroup`]: a memory cgroup for the server under test.
//! - [`subscriber`]: an EventSource-like client that resumes with `Last-Event-ID`.
//! - [`roster`]: who sits on each client seat: the plan's clients, or clients that come
//!   and go (the soak), each judged for the part of the run it was there.
//! - [`observe`]: availability samples per client and the server's gauges during a run,
//!   and the leak-slope fit.
//! - [`plan_run`]: the real backend for plans: one proxy per client, faults as toxics and
//!   signals, the same records and oracle as the simulation.
//! - [`cluster_run`]: the real backend for cluster plans: N nodes in cluster mode on a
//!   NATS JetStream cluster, node and backplane faults, the same records and oracle.
//! - [`attacks`]: raw-socket slowloris and flood connections.
//! - [`nginx`]: a stock nginx as the reverse proxy in front of the server.
//! - [`nats`]: a 3-node NATS JetStream cluster of real processes, for cluster mode.
//! - [`run_report`]: a run's HTML report: verdict, replay command, timelines with the
//!   fault windows shaded and recovery points marked.
//! - [`soak`]: a long run of generated client-side faults: availability and leak slopes.

pub mod attacks;
pub mod cgroup;
pub mod cluster_run;
pub mod nats;
pub mod nginx;
pub mod observe;
pub mod plan_run;
pub mod processes;
pub mod roster;
pub mod run_report;
pub mod soak;
pub mod subscriber;
pub mod toxiproxy;
