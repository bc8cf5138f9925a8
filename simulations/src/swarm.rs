//! Swarm runs: for each seed, a plan drawn from the generator with that seed, checked by
//! the oracle; a failing plan is shrunk by proptest to a minimal one, and the report
//! says how to replay it.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::harness;
use crate::plan::Plan;
use crate::trace::Trace;

/// The plan the generator draws for `seed`.
pub fn plan_for(seed: u64) -> Plan {
    runner(seed).run_one_tree().current()
}

fn runner(seed: u64) -> TestRunnerWithSeed {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    TestRunnerWithSeed(TestRunner::new_with_rng(Config::default(), rng))
}

struct TestRunnerWithSeed(TestRunner);

impl TestRunnerWithSeed {
    fn run_one_tree(&mut self) -> impl ValueTree<Value = Plan> {
        crate::generate::plan().new_tree(&mut self.0).expect("plan strategies never reject")
    }
}

/// A failing seed with its shrunk plan.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub plan: Plan,
    pub failures: Vec<String>,
}

/// Simulation runs one shrink may spend.
const SHRINK_BUDGET: usize = 48;

/// Runs the generated plan for `seed`; on failure, if `shrink`, shrinks it (bounded)
/// and returns the smallest plan that still fails under the same seed.
pub fn check_seed(seed: u64, shrink: bool) -> Result<harness::Outcome, Box<Failure>> {
    let mut runner = runner(seed);
    let mut tree = runner.run_one_tree();
    let outcome = harness::run(seed, &tree.current(), Trace::default());
    if outcome.failures.is_empty() {
        return Ok(outcome);
    }
    let mut smallest = Failure { seed, plan: tree.current(), failures: outcome.failures };
    if !shrink {
        return Err(Box::new(smallest));
    }
    // Classic proptest shrinking: simplify while it still fails, else back off.
    let mut budget = SHRINK_BUDGET;
    while budget > 0 && tree.simplify() {
        while budget > 0 {
            budget -= 1;
            let candidate = tree.current();
            let failures = harness::run(seed, &candidate, Trace::default()).failures;
            if !failures.is_empty() {
                smallest = Failure { seed, plan: candidate, failures };
                break;
            }
            if !tree.complicate() {
                break;
            }
        }
    }
    Err(Box::new(smallest))
}
