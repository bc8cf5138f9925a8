//! Generated fault plans (swarm testing): random client counts, windows, coalescing and
//! faults from the whole vocabulary, as proptest strategies so a failing plan shrinks to
//! a minimal one. Every fault heals before publishing ends (publishing runs from 1 s to
//! 13 s; a fault starts by 6 s and lasts at most 6 s; a process sequence heals by 12.5 s).

use std::time::Duration;

use proptest::prelude::*;

use crate::plan::{Fault, Plan, StoreMode, TimedFault};

/// Publishing lasts this long in generated plans; faults start and heal inside it.
const PUBLISH_FOR_MS: u64 = 12_000;

fn fault(clients: usize) -> impl Strategy<Value = Fault> {
    let client = 0..clients;
    prop_oneof![
        1 => (client.clone(), 500u64..6_000)
            .prop_map(|(client, ms)| Fault::Partition { client, heal_after: Duration::from_millis(ms) }),
        1 => (client.clone(), 100u64..3_000)
            .prop_map(|(client, ms)| Fault::Hold { client, release_after: Duration::from_millis(ms) }),
        3 => process_fault(),
        1 => (client.clone(), 50u64..800, 500u64..5_000).prop_map(|(client, latency, ms)| Fault::Lag {
            client,
            latency: Duration::from_millis(latency),
            duration: Duration::from_millis(ms)
        }),
        1 => client.clone().prop_map(|client| Fault::Drop { client }),
        1 => Just(Fault::DropAll),
        1 => (1usize..=20).prop_map(|connections| Fault::Slowloris { connections }),
        1 => (client.clone(), 100u64..5_000).prop_map(|(client, ms)| Fault::Stall { client, duration: Duration::from_millis(ms) }),
        // From a few bytes (inside the response head) to many events.
        1 => (client.clone(), prop_oneof![1usize..200, 200usize..2_000, 2_000usize..20_000])
            .prop_map(|(client, after_bytes)| Fault::Cut { client, after_bytes }),
        1 => (500u64..4_000).prop_map(|ms| Fault::Freeze { duration: Duration::from_millis(ms) }),
        1 => (client.clone(), 500u64..4_000).prop_map(|(client, ms)| Fault::Slicer { client, duration: Duration::from_millis(ms) }),
        1 => (client.clone(), 1u64..64, 500u64..4_000).prop_map(|(client, kbps, ms)| Fault::Bandwidth {
            client,
            kbps,
            duration: Duration::from_millis(ms)
        }),
        1 => (client, 100u64..2_000, 500u64..4_000).prop_map(|(client, delay, ms)| Fault::SlowClose {
            client,
            delay: Duration::from_millis(delay),
            duration: Duration::from_millis(ms)
        }),
        1 => (1usize..=200, 500u64..3_000)
            .prop_map(|(connections, ms)| Fault::Flood { connections, duration: Duration::from_millis(ms) }),
    ]
}

/// A crash, a graceful restart or a move.
fn process_fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (100u64..2_000).prop_map(|ms| Fault::Crash { restart_after: Duration::from_millis(ms) }),
        (2_500u64..4_000).prop_map(|ms| Fault::Restart { restart_after: Duration::from_millis(ms) }),
        (2_500u64..4_000).prop_map(|ms| Fault::Move { restart_after: Duration::from_millis(ms) }),
    ]
}

/// Two process faults back to back, the second starting within a second of the first's
/// heal: a crash then a restart (or the other way round) crosses store states that faults
/// drawn one by one rarely line up, like a boot that is stopped cleanly before it has
/// published anything after a power cut. Independent faults almost never land there.
fn process_sequence() -> impl Strategy<Value = Vec<TimedFault>> {
    // Short gaps are the interesting ones: the boot in between has had no time to publish.
    let gap = prop_oneof![0u64..150, 0u64..1_000];
    (1_500u64..3_500, process_fault(), gap, process_fault()).prop_map(|(at, first, gap, second)| {
        let first = TimedFault { at: Duration::from_millis(at), fault: first };
        let second = TimedFault { at: first.heals_at() + Duration::from_millis(gap), fault: second };
        vec![first, second]
    })
}

/// Any plan: 1–8 clients, 1–4 topics, small or large windows, with or without
/// coalescing, any store, 0–6 faults drawn one by one, and in half of the plans a
/// back-to-back pair of process faults besides.
pub fn plan() -> impl Strategy<Value = Plan> {
    (
        1usize..=8,
        1usize..=4,
        prop_oneof![Just(4usize), Just(32), Just(1024)],
        prop_oneof![Just(0u64), Just(10)],
        1u64..=20,
        prop_oneof![Just(StoreMode::Fresh), Just(StoreMode::Durable), Just(StoreMode::Interval)],
    )
        .prop_flat_map(|(clients, topics, window, coalesce_ms, latency_ms, store)| {
            let timed = (1_500u64..PUBLISH_FOR_MS - 6_000, fault(clients))
                .prop_map(|(at, fault)| TimedFault { at: Duration::from_millis(at), fault });
            let sequence = prop_oneof![Just(Vec::new()), process_sequence()];
            (proptest::collection::vec(timed, 0..=6), sequence).prop_map(move |(mut faults, sequence)| {
                faults.extend(sequence);
                Plan {
                    clients,
                    topics,
                    window,
                    coalesce_ms,
                    publish_for: Duration::from_millis(PUBLISH_FOR_MS),
                    publish_every: Duration::from_millis(40),
                    max_latency: Duration::from_millis(latency_ms),
                    store,
                    faults,
                    ..Plan::calm(clients)
                }
            })
        })
}
