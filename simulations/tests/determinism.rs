//! One seed twice gives byte-identical traces: every fault, acknowledgement, received
//! event, reset and reconnect, stamped in simulated time.

use std::time::Duration;

use sse_plan::{Fault, Plan};
use sse_simulations::harness;
use sse_simulations::trace::Trace;

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_does_not() {
    let plan = Plan::calm(4)
        .with(2_500, Fault::Partition { client: 1, heal_after: Duration::from_secs(3) })
        .with(3_000, Fault::Crash { restart_after: Duration::from_millis(700) })
        .with(5_000, Fault::DropAll)
        .with(6_000, Fault::Lag { client: 2, latency: Duration::from_millis(400), duration: Duration::from_secs(2) })
        .with(6_500, Fault::Hold { client: 3, release_after: Duration::from_secs(1) });
    let first = harness::run(42, &plan, Trace::default()).trace.text();
    assert!(first.lines().count() > 500, "a trace worth comparing: {} lines", first.lines().count());
    // What ran before in the process must not matter: tokio's task ids are process-wide,
    // and a crash tears a host's tasks down in their order. Move them on by 0 to 3.
    let elsewhere = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for moved in 0..4 {
        let second = harness::run(42, &plan, Trace::default()).trace.text();
        if first != second {
            let at = first.lines().zip(second.lines()).position(|(a, b)| a != b).unwrap_or(0);
            let (a, b) = (first.lines().nth(at), second.lines().nth(at));
            panic!("traces differ (task ids moved by {moved}) from line {at}:\n  {a:?}\n  {b:?}");
        }
        drop(elsewhere.spawn(async {}));
    }
    let other = harness::run(43, &plan, Trace::default()).trace.text();
    assert_ne!(first, other, "the seed must matter");
}
