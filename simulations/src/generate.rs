//! Generated fault plans (swarm testing): random client counts, windows, coalescing and
//! faults from the whole vocabulary, as proptest strategies so a failing plan shrinks to
//! a minimal one. Every fault heals before publishing ends.

use std::time::Duration;

use proptest::prelude::*;

use crate::plan::{Fault, Plan, StoreMode, TimedFault};

/// Publishing lasts this long in generated plans; faults start and heal inside it.
const PUBLISH_FOR_MS: u64 = 12_000;

fn fault(clients: usize) -> impl Strategy<Value = Fault> {
    let client = 0..clients;
    prop_oneof![
        (client.clone(), 500u64..6_000)
            .prop_map(|(client, ms)| Fault::Partition { client, heal_after: Duration::from_millis(ms) }),
        (client.clone(), 100u64..3_000)
            .prop_map(|(client, ms)| Fault::Hold { client, release_after: Duration::from_millis(ms) }),
        (100u64..2_000).prop_map(|ms| Fault::Crash { restart_after: Duration::from_millis(ms) }),
        (2_500u64..4_000).prop_map(|ms| Fault::Restart { restart_after: Duration::from_millis(ms) }),
        (2_500u64..4_000).prop_map(|ms| Fault::Move { restart_after: Duration::from_millis(ms) }),
        (client.clone(), 50u64..800, 500u64..5_000).prop_map(|(client, latency, ms)| Fault::Lag {
            client,
            latency: Duration::from_millis(latency),
            duration: Duration::from_millis(ms)
        }),
        client.clone().prop_map(|client| Fault::Drop { client }),
        Just(Fault::DropAll),
        (1usize..=20).prop_map(|connections| Fault::Slowloris { connections }),
        (client, 100u64..5_000).prop_map(|(client, ms)| Fault::Stall { client, duration: Duration::from_millis(ms) }),
    ]
}

/// Any plan: 1–8 clients, 1–4 topics, small or large windows, with or without
/// coalescing, any store, 0–6 faults.
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
            proptest::collection::vec(timed, 0..=6).prop_map(move |faults| Plan {
                clients,
                topics,
                window,
                coalesce_ms,
                publish_for: Duration::from_millis(PUBLISH_FOR_MS),
                publish_every: Duration::from_millis(40),
                max_latency: Duration::from_millis(latency_ms),
                store,
                faults,
            })
        })
}
