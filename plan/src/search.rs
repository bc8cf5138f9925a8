//! Plans from seeds, and shrinking: for each seed the generator draws one plan; a backend
//! runs it and the oracle judges; a failing plan is shrunk by proptest to a smaller one
//! that still fails. The same for every backend: the simulation is deterministic (a
//! candidate fails or not), a real run is not, so a candidate there counts as failing
//! only if it fails in `k` of `n` runs ([`Shrink`]), and shrinking drops whole faults
//! rather than walking proptest's tree (see [`check_seed`]).

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::generate::Size;
use crate::plan::Plan;

/// The plan the generator draws for `seed` (simulation-sized).
pub fn plan_for(seed: u64) -> Plan {
    tree(seed, Size::Simulation).current()
}

/// The plan the generator draws for `seed` at `size`.
pub fn plan_sized(seed: u64, size: Size) -> Plan {
    tree(seed, size).current()
}

fn tree(seed: u64, size: Size) -> impl ValueTree<Value = Plan> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    crate::generate::plan_sized(size).new_tree(&mut runner).expect("plan strategies never reject")
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
    size: Size,
    shrink: Option<Shrink>,
    mut run: impl FnMut(&Plan) -> O,
    failed: impl Fn(&O) -> Vec<String>,
) -> Result<O, Box<Failure>> {
    let mut tree = tree(seed, size);
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
    // A noisy backend cannot afford proptest's walk (it re-draws every fault when it
    // simplifies the plan's shape): it drops whole faults instead, first all of them, then
    // one at a time from the last, keeping each drop that still fails.
    if rule.n > 1 {
        let mut calm = smallest.plan.clone();
        calm.faults.clear();
        if let Some(failures) = still_fails(&calm, &mut budget) {
            return Err(Box::new(Failure { seed, plan: calm, failures }));
        }
        for i in (0..smallest.plan.faults.len()).rev() {
            let mut candidate = smallest.plan.clone();
            candidate.faults.remove(i);
            if budget == 0 {
                break;
            }
            if let Some(failures) = still_fails(&candidate, &mut budget) {
                smallest = Failure { seed, plan: candidate, failures };
            }
        }
        return Err(Box::new(smallest));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Fault;

    /// A noisy backend whose plans fail when they hold a crash and every third run anyway
    /// (so a 1-of-1 rule would keep a passing candidate): the 2-of-3 shrink keeps only the
    /// crash, within its budget.
    #[test]
    fn a_noisy_failure_shrinks_to_the_fault_that_causes_it() {
        let crashes = |plan: &Plan| plan.faults.iter().filter(|f| matches!(f.fault, Fault::Crash { .. })).count();
        let seed = (1..500)
            .find(|s| {
                let plan = plan_sized(*s, Size::RealTime);
                crashes(&plan) == 1 && plan.faults.len() >= 4
            })
            .expect("a seed with one crash among several faults");
        let mut runs = 0;
        let shrink = Shrink { budget: 40, k: 2, n: 3 };
        let failure = check_seed(
            seed,
            Size::RealTime,
            Some(shrink),
            |plan| {
                runs += 1;
                crashes(plan) > 0 || runs % 3 == 0
            },
            |failed| if *failed { vec!["crashed".to_owned()] } else { Vec::new() },
        )
        .expect_err("the plan holds a crash");
        assert_eq!(failure.plan.faults.len(), 1, "{}", failure.plan);
        assert_eq!(crashes(&failure.plan), 1);
        assert!(runs <= 41, "{runs} runs, budget 40 (+ the first)");
    }
}
