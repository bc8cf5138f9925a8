//! Generated plans under many seeds: the fixed set plus `SIM_SEEDS` fresh ones (a few by
//! default, more in the nightly run). A failure is shrunk and printed with its replay.

use sse_simulations::{replay_command, seeds, swarm};

#[test]
fn generated_fault_plans_hold_the_oracle() {
    let fresh = seeds::fresh(seeds::fresh_count(4));
    println!("fresh seeds: {fresh:?}");
    let mut failures = Vec::new();
    for seed in seeds::FIXED.into_iter().chain(fresh) {
        // Only the first failure is shrunk: shrinking costs many runs.
        if let Err(failure) = swarm::check_seed(seed, failures.is_empty()) {
            failures.push(format!(
                "seed {seed}: {}\nplan (shrunk if first; save it as the regression file below):\n{}replay: {}",
                failure.failures.join("\n  "),
                failure.plan,
                replay_command(seed, Some(&format!("fixtures/sim-regressions/seed-{seed}.plan")))
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
