//! Generated fault plans (swarm testing): random client counts, windows, coalescing and
//! faults from the whole vocabulary, as proptest strategies so a failing plan shrinks to
//! a minimal one. Two sizes of the same vocabulary: [`Size::Simulation`] (publishing from
//! 1 s to 13 s; a fault starts by 6 s and lasts at most 6 s; a process sequence heals by
//! 12.5 s, so every fault heals before publishing ends) and [`Size::RealTime`], for real
//! runs that must stay short: every time halved (publishing 6 s, faults from 1.25 s to
//! 3.5 s) except a restart's or move's time to drain, which the server's drain timeout
//! fixes.

use std::time::Duration;

use proptest::prelude::*;

use crate::plan::{Fault, Plan, StoreMode, TimedFault};

/// Publishing lasts this long in simulation-sized plans; faults start and heal inside it.
const PUBLISH_FOR_MS: u64 = 12_000;

/// How long generated plans run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Simulated time is cheap: 12 s of publishing.
    Simulation,
    /// Real runs, about 10 s each: the simulation's times halved.
    RealTime,
    /// Real cluster runs (`cluster N`), about 30 s each: 2–3 nodes, publishing 20 s,
    /// 1–6 node and backplane faults (see [`cluster_plan`]).
    Cluster,
}

impl Size {
    /// What every planned time but a drain is divided by.
    fn divisor(self) -> u64 {
        match self {
            Size::Simulation | Size::Cluster => 1,
            Size::RealTime => 2,
        }
    }
}

fn fault(clients: usize, d: u64) -> impl Strategy<Value = Fault> {
    let client = 0..clients;
    prop_oneof![
        1 => (client.clone(), 500 / d..6_000 / d)
            .prop_map(|(client, ms)| Fault::Partition { client, heal_after: Duration::from_millis(ms) }),
        1 => (client.clone(), 100 / d..3_000 / d)
            .prop_map(|(client, ms)| Fault::Hold { client, release_after: Duration::from_millis(ms) }),
        3 => process_fault(d),
        1 => (client.clone(), 50u64..800, 500 / d..5_000 / d).prop_map(|(client, latency, ms)| Fault::Lag {
            client,
            latency: Duration::from_millis(latency),
            duration: Duration::from_millis(ms)
        }),
        1 => client.clone().prop_map(|client| Fault::Drop { client }),
        1 => Just(Fault::DropAll),
        1 => (1usize..=20).prop_map(|connections| Fault::Slowloris { connections }),
        1 => (client.clone(), 100 / d..5_000 / d).prop_map(|(client, ms)| Fault::Stall { client, duration: Duration::from_millis(ms) }),
        // From a few bytes (inside the response head) to many events.
        1 => (client.clone(), prop_oneof![1usize..200, 200usize..2_000, 2_000usize..20_000])
            .prop_map(|(client, after_bytes)| Fault::Cut { client, after_bytes }),
        1 => (500 / d..4_000 / d).prop_map(|ms| Fault::Freeze { duration: Duration::from_millis(ms) }),
        1 => (client.clone(), 500 / d..4_000 / d).prop_map(|(client, ms)| Fault::Slicer { client, duration: Duration::from_millis(ms) }),
        1 => (client.clone(), 1u64..64, 500 / d..4_000 / d).prop_map(|(client, kbps, ms)| Fault::Bandwidth {
            client,
            kbps,
            duration: Duration::from_millis(ms)
        }),
        1 => (client, 100u64..2_000, 500 / d..4_000 / d).prop_map(|(client, delay, ms)| Fault::SlowClose {
            client,
            delay: Duration::from_millis(delay),
            duration: Duration::from_millis(ms)
        }),
        1 => (1usize..=200, 500 / d..3_000 / d)
            .prop_map(|(connections, ms)| Fault::Flood { connections, duration: Duration::from_millis(ms) }),
    ]
}

/// A crash, a graceful restart or a move (a drain's time is never divided: the server's
/// drain timeout fixes it).
fn process_fault(d: u64) -> impl Strategy<Value = Fault> {
    prop_oneof![
        (100 / d..2_000 / d).prop_map(|ms| Fault::Crash { restart_after: Duration::from_millis(ms) }),
        (2_500u64..4_000).prop_map(|ms| Fault::Restart { restart_after: Duration::from_millis(ms) }),
        (2_500u64..4_000).prop_map(|ms| Fault::Move { restart_after: Duration::from_millis(ms) }),
    ]
}

/// Two process faults back to back, the second starting within a second of the first's
/// heal: a crash then a restart (or the other way round) crosses store states that faults
/// drawn one by one rarely line up, like a boot that is stopped cleanly before it has
/// published anything after a power cut. Independent faults almost never land there.
fn process_sequence(d: u64) -> impl Strategy<Value = Vec<TimedFault>> {
    // Short gaps are the interesting ones: the boot in between has had no time to publish.
    let gap = prop_oneof![0u64..150, 0u64..1_000 / d];
    (1_000 + 500 / d..1_000 + 2_500 / d, process_fault(d), gap, process_fault(d)).prop_map(
        |(at, first, gap, second)| {
            let first = TimedFault { at: Duration::from_millis(at), fault: first };
            let second = TimedFault { at: first.heals_at() + Duration::from_millis(gap), fault: second };
            vec![first, second]
        },
    )
}

/// Any plan of the simulation's size ([`plan_sized`]).
pub fn plan() -> impl Strategy<Value = Plan> {
    plan_sized(Size::Simulation)
}

/// A cluster fault: a node killed or paused, the stream's leader killed, a NATS node
/// paused, a node cut from NATS, or all of NATS restarted; each lasting 0.5–4 s.
fn cluster_fault() -> impl Strategy<Value = Fault> {
    let lasting = || (500u64..4_000).prop_map(Duration::from_millis);
    prop_oneof![
        (0usize..3, lasting()).prop_map(|(node, restart_after)| Fault::KillNode { node, restart_after }),
        (0usize..3, lasting()).prop_map(|(node, duration)| Fault::PauseNode { node, duration }),
        lasting().prop_map(|restart_after| Fault::KillLeader { restart_after }),
        (0usize..3, lasting()).prop_map(|(node, duration)| Fault::PauseNats { node, duration }),
        (0usize..3, lasting()).prop_map(|(node, heal_after)| Fault::Isolate { node, heal_after }),
        lasting().prop_map(|restart_after| Fault::RestartNats { restart_after }),
    ]
}

/// A cluster plan: 2–3 nodes, 2–8 clients, 1–3 topics, publishing 20 s, 1–6 cluster
/// faults starting between 2 s and 14 s (so each heals well before publishing ends).
pub fn cluster_plan() -> impl Strategy<Value = Plan> {
    (2usize..=3, 2usize..=8, 1usize..=3, prop_oneof![Just(8usize), Just(256)]).prop_flat_map(
        |(nodes, clients, topics, window)| {
            let timed = (2_000u64..14_000, cluster_fault())
                .prop_map(|(at, fault)| TimedFault { at: Duration::from_millis(at), fault });
            proptest::collection::vec(timed, 1..=6).prop_map(move |faults| Plan {
                clients,
                topics,
                window,
                publish_for: Duration::from_secs(20),
                publish_every: Duration::from_millis(40),
                max_latency: Duration::from_millis(5),
                cluster: Some(nodes),
                faults,
                ..Plan::calm(clients)
            })
        },
    )
}

/// Any plan of `size`: for the simulation and real-time sizes, 1–8 clients, 1–4 topics,
/// small or large windows, with or without coalescing, any store, 0–6 faults drawn one by
/// one, and in half of the plans a back-to-back pair of process faults besides; for
/// [`Size::Cluster`], a [`cluster_plan`].
pub fn plan_sized(size: Size) -> BoxedStrategy<Plan> {
    if size == Size::Cluster {
        return cluster_plan().boxed();
    }
    let d = size.divisor();
    let publish_for_ms = PUBLISH_FOR_MS / d;
    (
        1usize..=8,
        1usize..=4,
        prop_oneof![Just(4usize), Just(32), Just(1024)],
        prop_oneof![Just((0u64, false)), Just((10, false)), Just((5, true))],
        1u64..=20,
        prop_oneof![Just(StoreMode::Fresh), Just(StoreMode::Durable), Just(StoreMode::Interval)],
    )
        .prop_flat_map(move |(clients, topics, window, (coalesce_ms, coalesce_auto), latency_ms, store)| {
            let timed = (1_000 + 500 / d..1_000 + (PUBLISH_FOR_MS - 7_000) / d, fault(clients, d))
                .prop_map(|(at, fault)| TimedFault { at: Duration::from_millis(at), fault });
            let sequence = prop_oneof![Just(Vec::new()), process_sequence(d)];
            (proptest::collection::vec(timed, 0..=6), sequence).prop_map(move |(mut faults, sequence)| {
                faults.extend(sequence);
                Plan {
                    clients,
                    topics,
                    window,
                    coalesce_ms,
                    coalesce_auto,
                    publish_for: Duration::from_millis(publish_for_ms),
                    publish_every: Duration::from_millis(40),
                    max_latency: Duration::from_millis(latency_ms),
                    store,
                    faults,
                    ..Plan::calm(clients)
                }
            })
        })
        .boxed()
}
