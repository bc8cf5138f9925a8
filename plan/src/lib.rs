//! `sse-plan`: one fault plan and one oracle for every backend that runs `sse-server`
//! under faults (the turmoil simulation in `sse-simulations`, the real binary behind
//! Toxiproxy in `sse-chaos`). A plan is data; a backend applies it and records what
//! happened; the oracle judges the records; a failing seed's plan is shrunk.
//!
//! - [`plan`]: the plan (the run's shape and timed faults) and its text form.
//! - [`generate`]: proptest strategies that draw plans from the whole vocabulary.
//! - [`search`]: the plan for a seed, and shrinking a failing one (k of n for real runs).
//! - [`record`]: what backends record: acknowledgements, each client's events and resets.
//! - [`oracle`]: loss, duplication, order, id reuse and catch-up, judged from the records.
//! - [`timing`]: the server timing plans run with, and the catch-up bound it implies.
//!
//! It depends on the server library only for its id parser, and on proptest: neither
//! tier's machinery (turmoil, Toxiproxy, hyper) comes along.

pub mod generate;
pub mod oracle;
pub mod plan;
pub mod record;
pub mod search;
pub mod timing;

pub use plan::{Expect, Fault, Plan, Reach, StoreMode, TimedFault};
pub use timing::Timing;
