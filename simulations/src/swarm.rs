//! Swarm runs in the simulation: the plan the generator draws for a seed, run by the
//! harness and judged by the oracle; a failure is shrunk (one run decides, the
//! simulation being deterministic) and the report says how to replay it.

use sse_plan::search::{self, Shrink};
pub use sse_plan::search::{plan_for, Failure};

use crate::harness;
use crate::trace::Trace;

/// Runs the generated plan for `seed`; on failure, if `shrink`, returns the smallest plan
/// that still fails under the same seed.
pub fn check_seed(seed: u64, shrink: bool) -> Result<harness::Outcome, Box<Failure>> {
    search::check_seed(
        seed,
        sse_plan::generate::Size::Simulation,
        shrink.then_some(Shrink::DETERMINISTIC),
        |plan| harness::run(seed, plan, Trace::default()),
        |outcome| outcome.failures.clone(),
    )
}
