//! Deterministic simulations of `sse-server` under turmoil: the unmodified server on a
//! simulated host, EventSource-like subscribers, a recording publisher, faults applied
//! in simulated time, and an oracle checked on every run. One seed reproduces a run
//! exactly. Plans, their generator, shrinking and the oracle live in `sse-plan`, shared
//! with the real tier; this crate is the simulation backend.
//!
//! Modules:
//! - [`harness`]: builds the simulation for a seed and a plan, applies faults, judges.
//! - [`swarm`]: a generated plan per seed, shrunk when it fails.
//! - [`seeds`]: the fixed seeds and `SIM_SEEDS` fresh ones.
//! - [`subscriber`]: the simulated EventSource client.
//! - [`placement`]: how many clients a plan runs with, and which need a faultable link.
//! - [`link`]: a client's link with partitions, holds and lags, carried in process.
//! - [`publisher`]: the simulated publisher that records acknowledgements.
//! - [`slowloris`]: connections that never finish their request head.
//! - [`flood`]: many stream requests at once, held, then dropped.
//! - [`sim_listener`]: the server's `Listener` seam on turmoil TCP.
//! - [`trace`]: the run's trace in simulated time.
//! - [`server_log`]: the server's log lines, captured into the trace.
//! - [`service`]: the host clients connect to (repointed when the service moves).

pub mod flood;
pub mod harness;
pub mod link;
pub mod placement;
pub mod publisher;
pub mod seeds;
pub mod server_log;
pub mod service;
pub mod sim_listener;
pub mod slowloris;
pub mod subscriber;
pub mod swarm;
pub mod trace;

/// The port the simulated server listens on.
pub const SERVER_PORT: u16 = 8080;

/// The command that replays a seed (and plan), printed with every failure.
pub fn replay_command(seed: u64, plan_file: Option<&str>) -> String {
    match plan_file {
        Some(file) => format!("cargo run -p sse-simulations -- replay --seed {seed} --plan {file}"),
        None => format!("cargo run -p sse-simulations -- replay --seed {seed}"),
    }
}
