//! Plans that once found a bug, stored in `fixtures/sim-regressions/seed-<N>.plan`, replayed
//! under their seed on every `cargo test`.

use std::path::Path;

use sse_plan::Plan;
use sse_simulations::harness;
use sse_simulations::replay_command;
use sse_simulations::trace::Trace;

#[test]
fn stored_regressions_still_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sim-regressions");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("the regressions folder").map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no regressions in {}", dir.display());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let seed: u64 = name
            .strip_prefix("seed-")
            .and_then(|rest| rest.strip_suffix(".plan"))
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| panic!("{name}: regression files are named seed-<N>.plan"));
        let plan: Plan = std::fs::read_to_string(&file).unwrap().parse().unwrap_or_else(|e| panic!("{name}: {e}"));
        let outcome = harness::run(seed, &plan, Trace::default());
        assert!(
            outcome.failures.is_empty(),
            "{name}: {:?}\nreplay: {}",
            outcome.failures,
            replay_command(seed, Some(&format!("fixtures/sim-regressions/{name}")))
        );
    }
}

/// The plans in `fixtures/plans/`, which the real tier runs too, pass here under seed 1.
#[test]
fn stored_plans_pass_in_the_simulation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/plans");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("the plans folder").map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 2, "plans in {}", dir.display());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let plan: Plan = std::fs::read_to_string(&file).unwrap().parse().unwrap_or_else(|e| panic!("{name}: {e}"));
        let outcome = harness::run(1, &plan, Trace::default());
        assert!(
            outcome.failures.is_empty(),
            "{name}: {:?}\nreplay: {}",
            outcome.failures,
            replay_command(1, Some(&format!("fixtures/plans/{name}")))
        );
    }
}
