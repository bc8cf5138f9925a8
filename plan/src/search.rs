//! Plans from seeds, and shrinking: for each seed the generator draws one plan; a backend
//! runs it and the oracle judges; a failing plan is shrunk by proptest to a smaller one
//! that still fails. The same for every backend: the simulation is deterministic (a
//! candidate fails or not), a real run is not, so a candidate there counts as failing
//! only if it fails in `k` of `n` runs ([`Shrink`]).

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::plan::Plan;

/// The plan the generator draws for `seed`.
pub fn plan_for(seed: u64) -> Plan {
    tree(seed).current()
}

fn tree(seed: u64) -> impl ValueTree<Value = Plan> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    crate::generate::plan().new_tree(&mut runner).expect("plan strategies never reject")
}

/// A failing seed with its (shrunk) plan and what the oracle said of it.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub plan: Plan,
    pub failures: Vec<String>,
}

/// How hard to shrink.
#[derive(Debug, Clone, Copy)]
pub struct Shrink {
    /// Runs the whole shrink may spend.
    pub budget: usize,
    /// A candidate fails if it fails in at least `k` of `n` runs.
    pub k: usize,
    pub n: usize,
}

impl Shrink {
    /// Deterministic backends: one run decides.
    pub const DETERMINISTIC: Shrink = Shrink { budget: 48, k: 1, n: 1 };
}

/// Runs the plan drawn for `seed` with `run`; `failed` reads the oracle's failures out of
/// a run's outcome (empty: it passed). On failure, with `shrink`, simplifies the plan
/// while it still fails and returns the smallest failing one.
pub fn check_seed<O>(
    seed: u64,
    shrink: Option<Shrink>,
    mut run: impl FnMut(&Plan) -> O,
    failed: impl Fn(&O) -> Vec<String>,
) -> Result<O, Box<Failure>> {
    let mut tree = tree(seed);
    let outcome = run(&tree.current());
    let failures = failed(&outcome);
    if failures.is_empty() {
        return Ok(outcome);
    }
    let mut smallest = Failure { seed, plan: tree.current(), failures };
    let Some(rule) = shrink else { return Err(Box::new(smallest)) };
    let mut budget = rule.budget;
    // Whether `plan` fails in k of n runs (stopping as soon as that is decided).
    let mut still_fails = |plan: &Plan, budget: &mut usize| -> Option<Vec<String>> {
        let (mut failing, mut first) = (0, None);
        for attempt in 0..rule.n {
            if *budget == 0 || failing + (rule.n - attempt) < rule.k {
                break;
            }
            *budget -= 1;
            let failures = failed(&run(plan));
            if !failures.is_empty() {
                failing += 1;
                first.get_or_insert(failures);
                if failing >= rule.k {
                    return first;
                }
            }
        }
        None
    };
    // Classic proptest shrinking: simplify while it still fails, else back off.
    while budget > 0 && tree.simplify() {
        while budget > 0 {
            let candidate = tree.current();
            if let Some(failures) = still_fails(&candidate, &mut budget) {
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
