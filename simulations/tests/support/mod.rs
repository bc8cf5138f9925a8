//! Running a plan under a seed and failing with everything needed to reproduce it.

use sse_plan::Plan;
use sse_simulations::harness::{self, Outcome};
use sse_simulations::replay_command;
use sse_simulations::trace::Trace;

/// Runs and panics on any oracle failure with the seed, the plan and the replay command.
pub fn check(seed: u64, plan: &Plan) -> Outcome {
    let outcome = harness::run(seed, plan, Trace::default());
    if !outcome.failures.is_empty() {
        let trace = outcome.trace.text();
        let lines: Vec<&str> = trace.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        panic!(
            "seed {seed} failed:\n  {}\nplan:\n{plan}\nreplay: {}\nlast trace lines:\n{}",
            outcome.failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n  "),
            replay_command(seed, None),
            tail.join("\n")
        );
    }
    outcome
}
