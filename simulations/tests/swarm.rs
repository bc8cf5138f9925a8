//! Generated plans under many seeds: the fixed set (seeds 1 to 200) plus `SIM_SEEDS` fresh
//! ones (a few by default, more in the nightly run). A failure is shrunk and printed with
//! its replay; a pass prints the recovery-time distribution over every client.

use sse_simulations::{replay_command, seeds, swarm};

#[test]
fn generated_fault_plans_hold_the_oracle() {
    let fresh = seeds::fresh(seeds::fresh_count(4));
    println!("fresh seeds: {fresh:?}");
    let mut failures = Vec::new();
    let (mut recoveries, mut runs, mut simulated) = (Vec::new(), 0, std::time::Duration::ZERO);
    for seed in seeds::fixed().chain(fresh) {
        // Only the first failure is shrunk: shrinking costs many runs.
        match swarm::check_seed(seed, failures.is_empty()) {
            Ok(outcome) => {
                runs += 1;
                simulated += outcome.simulated;
                recoveries.extend(outcome.recoveries);
            }
            Err(failure) => {
                failures.push(format!(
                    "seed {seed}: {}\nplan (shrunk if first; save it as the regression file below):\n{}replay: {}",
                    failure.failures.join("\n  "),
                    failure.plan,
                    replay_command(seed, Some(&format!("fixtures/sim-regressions/seed-{seed}.plan")))
                ));
            }
        }
    }
    recoveries.sort();
    let at = |p: f64| {
        let i = ((recoveries.len() as f64 * p) as usize).min(recoveries.len().saturating_sub(1));
        recoveries.get(i).copied().unwrap_or_default()
    };
    println!(
        "{runs} runs, {simulated:?} simulated; recovery after the last fault, over {} clients: p50 {:?} p99 {:?} max {:?}",
        recoveries.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
