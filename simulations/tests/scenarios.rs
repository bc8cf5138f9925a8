//! Named scenarios: each a fault and the expectation, under a pinned seed. Every run
//! also passes the whole oracle (no loss without a reset notice, no duplicate, ids in
//! order, catch-up within the bound, server back to baseline after clients leave).

mod support;

use std::time::Duration;

use sse_plan::{Expect, Fault, Plan, StoreMode};
use sse_simulations::harness::{catch_up_bound, server_config};
use support::check;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn bound(plan: &Plan) -> Duration {
    catch_up_bound(&server_config(plan, 0, 0))
}

#[test]
fn calm_run_delivers_every_event_to_every_subscriber() {
    let outcome = check(1, &Plan::calm(4));
    assert!(outcome.acked > 100, "the publisher published: {}", outcome.acked);
    assert!(outcome.recoveries.iter().all(|r| *r < Duration::from_millis(100)), "{:?}", outcome.recoveries);
    // Idle streams stay up on heartbeats alone: nobody reconnects in a calm run.
    let trace = outcome.trace.text();
    assert!(!trace.contains("stream ended"), "{trace}");
}

#[test]
fn half_open_client_is_found_by_heartbeat_silence_and_catches_up_after_repair() {
    let plan = Plan::calm(3).with(3_000, Fault::Partition { client: 0, heal_after: secs(6) });
    let outcome = check(2, &plan);
    let trace = outcome.trace.text();
    assert!(trace.contains("client-0     stream ended: silent for three heartbeats"), "{trace}");
    assert!(outcome.recoveries.iter().all(|r| *r <= bound(&plan)), "{:?}", outcome.recoveries);
}

#[test]
fn a_hundred_clients_share_a_host_and_a_partition_of_one_link_reaches_that_client_alone() {
    let plan = Plan { publish_for: secs(8), ..Plan::calm(100) }
        .with(3_000, Fault::Partition { client: 7, heal_after: secs(5) });
    let outcome = check(5, &plan);
    assert!(outcome.skipped.is_empty(), "every client ran: {:?}", outcome.skipped);
    assert_eq!(outcome.recoveries.len(), 100);
    let trace = outcome.trace.text();
    let ended: Vec<&str> = trace.lines().filter(|line| line.contains("stream ended")).collect();
    assert!(!ended.is_empty(), "the partition was applied:\n{trace}");
    assert!(ended.iter().all(|line| line.contains(" client-7 ")), "only client-7 lost its stream: {ended:#?}");
}

#[test]
fn server_crash_resets_every_client_to_the_new_history() {
    let plan = Plan::calm(3).with(4_000, Fault::Crash { restart_after: secs(1) });
    let outcome = check(3, &plan);
    let trace = outcome.trace.text();
    assert!(trace.contains("server       boot 2 epoch"), "the server restarted:\n{trace}");
    for client in 0..3 {
        assert!(
            trace.contains(&format!("client-{client}     reset {{\"reason\":\"other_epoch\"}}")),
            "client-{client} was told its history is gone:\n{trace}"
        );
    }
}

#[test]
fn server_crash_with_a_durable_store_loses_nothing_and_resets_nobody() {
    let plan = Plan { store: StoreMode::Durable, ..Plan::calm(3) }.with(4_000, Fault::Crash { restart_after: secs(1) });
    let outcome = check(3, &plan);
    let trace = outcome.trace.text();
    assert!(trace.contains("server       boot 2 epoch"), "the server restarted:\n{trace}");
    assert!(trace.contains("power cut: the store forgot 0 unsynced events"), "{trace}");
    assert!(!trace.contains("reset {"), "the history survived, so nobody was reset:\n{trace}");
    let epochs: Vec<&str> = trace.lines().filter_map(|l| l.split("boot ").nth(1)?.split("epoch ").nth(1)).collect();
    assert!(epochs.len() == 2 && epochs[0] == epochs[1], "one epoch across boots: {epochs:?}");
}

#[test]
fn power_cut_under_interval_sync_takes_back_only_unsynced_events_and_never_an_id() {
    let plan = Plan { store: StoreMode::Interval, publish_every: Duration::from_millis(20), ..Plan::calm(3) }
        .with(4_010, Fault::Crash { restart_after: secs(1) });
    let outcome = check(9, &plan);
    let trace = outcome.trace.text();
    let forgot: usize = trace
        .split("power cut: the store forgot ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the crash hit the store");
    assert!(forgot > 0, "the cut came between syncs and took something back:\n{trace}");
    assert!(!trace.contains("reset {"), "clients resume across the cut without a reset:\n{trace}");
}

#[test]
fn a_graceful_move_to_a_second_host_on_the_same_store_loses_nothing_and_clients_follow() {
    let plan = Plan { store: StoreMode::Durable, ..Plan::calm(4) }.with(4_000, Fault::Move { restart_after: secs(3) });
    let outcome = check(10, &plan);
    let trace = outcome.trace.text();
    assert!(trace.contains("server drained: the service moves to server-b"), "{trace}");
    assert!(trace.contains("server-b     boot 2 epoch"), "{trace}");
    assert!(!trace.contains("reset {"), "one history across hosts: nobody is reset:\n{trace}");
    for client in 0..4 {
        assert!(
            trace.contains(&format!("client-{client}     connected to server-b")),
            "client-{client} moved:\n{trace}"
        );
    }
}

/// Largest delay from the publisher's acknowledgement to `client` receiving the event.
fn worst_delay(trace: &str, client: &str) -> Duration {
    let stamp = |line: &str| Duration::from_secs_f64(line.split('s').next().unwrap().trim().parse().unwrap());
    let mut acked = std::collections::BTreeMap::new();
    let mut worst = Duration::ZERO;
    for line in trace.lines() {
        if let Some(id) = line.split("publisher    acked ").nth(1).and_then(|r| r.split(' ').next()) {
            acked.insert(id.to_owned(), stamp(line));
        }
        let event = line.split(&format!("{client}     event ")).nth(1).and_then(|r| r.split(' ').next());
        if let Some(at) = event.and_then(|id| acked.get(id)) {
            worst = worst.max(stamp(line).saturating_sub(*at));
        }
    }
    worst
}

#[test]
fn a_latency_spike_on_one_link_delays_that_client_only_and_loses_nothing() {
    let plan =
        Plan::calm(3).with(3_000, Fault::Lag { client: 0, latency: Duration::from_millis(600), duration: secs(3) });
    let outcome = check(11, &plan);
    let trace = outcome.trace.text();
    let (slow, fast) = (worst_delay(&trace, "client-0"), worst_delay(&trace, "client-1"));
    assert!(slow > Duration::from_millis(200), "the spike was applied: worst delay {slow:?}");
    assert!(fast < Duration::from_millis(50), "other links keep their latency: worst delay {fast:?}");
}

#[test]
fn stalled_reader_falls_behind_a_small_window_and_is_never_silently_skipped() {
    let plan = Plan { window: 4, ..Plan::calm(2) }.with(3_000, Fault::Stall { client: 0, duration: secs(5) });
    let outcome = check(4, &plan);
    let trace = outcome.trace.text();
    assert!(trace.contains("client-0     reset {\"reason\":\"evicted\"}"), "{trace}");
}

#[test]
fn held_link_delivers_the_burst_in_order_after_release() {
    let plan = Plan::calm(2).with(3_000, Fault::Hold { client: 1, release_after: Duration::from_millis(2_500) });
    let trace = check(5, &plan).trace.text();
    let (held, free) = (worst_delay(&trace, "client-1"), worst_delay(&trace, "client-0"));
    assert!(held > Duration::from_millis(2_000), "the hold was applied: worst delay {held:?}");
    assert!(free < Duration::from_millis(50), "the other link was not held: worst delay {free:?}");
    assert!(!trace.contains("stream ended"), "a hold shorter than three heartbeats ends no stream:\n{trace}");
}

/// A partition shorter than the client's patience (three heartbeats): the stream lives
/// through it, and is reset at the heal (as the real tier's proxy does), not found silent.
#[test]
fn a_stream_that_lives_through_a_short_partition_is_reset_at_the_heal() {
    let plan = Plan::calm(2).with(3_000, Fault::Partition { client: 0, heal_after: Duration::from_millis(1_500) });
    let outcome = check(6, &plan);
    let trace = outcome.trace.text();
    let ended: Vec<&str> = trace.lines().filter(|line| line.contains("stream ended")).collect();
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert!(ended[0].contains("client-0     stream ended: closed by the server"), "{ended:#?}");
    let at: f64 = ended[0].split('s').next().unwrap().trim().parse().unwrap();
    assert!((4.5..4.6).contains(&at), "reset at the heal (4.5 s): {at}");
    let (cut_off, other) = (worst_delay(&trace, "client-0"), worst_delay(&trace, "client-1"));
    assert!(cut_off > Duration::from_millis(1_000), "the partition was applied: worst delay {cut_off:?}");
    assert!(other < Duration::from_millis(50), "the other link was not: worst delay {other:?}");
}

#[test]
fn disconnect_storm_every_client_resumes_without_loss() {
    let plan = Plan::calm(6).with(4_000, Fault::DropAll).with(6_000, Fault::DropAll);
    let outcome = check(6, &plan);
    let resumed = outcome.trace.text().matches(", last id ").count();
    assert!(resumed >= 18, "every client reconnected twice: {resumed} connections");
}

#[test]
fn graceful_restart_drains_in_time_and_clients_resume_on_the_new_boot() {
    let plan = Plan::calm(4).with(4_000, Fault::Restart { restart_after: secs(3) });
    let outcome = check(8, &plan);
    let trace = outcome.trace.text();
    assert!(trace.contains("server       boot 1 drained"), "{trace}");
    assert!(
        trace.contains("stream ended: stream finished by the server"),
        "streams were closed by the drain:\n{trace}"
    );
}

#[test]
fn slowloris_connections_are_closed_at_the_header_timeout_while_streams_go_on() {
    let plan = Plan::calm(3).with(2_000, Fault::Slowloris { connections: 20 });
    let outcome = check(9, &plan);
    assert!(outcome.trace.text().contains("slowloris    20 connections ended"), "{}", outcome.trace.text());
}

#[test]
fn coalesced_topics_keep_order_and_completeness_under_faults() {
    let plan = Plan { coalesce_ms: 10, ..Plan::calm(4) }
        .with(2_500, Fault::Drop { client: 2 })
        .with(3_000, Fault::Partition { client: 1, heal_after: secs(4) });
    check(7, &plan);
}

/// `--coalesce auto` with a 5 ms budget: one topic, published to for 5 s over 1 ms links
/// by a publisher that waits `every_ms` and for each answer (every 1 ms: an event about
/// every 4 ms), with `clients` subscribers; `gathered` bounds the wake-ups held for the budget
/// (at least, or at most) and `at_once` those woken straight away.
fn auto_coalesced(clients: usize, every_ms: u64, gathered: (bool, u64), at_once: (bool, u64)) -> Plan {
    let expect = |series: &str, (at_least, value): (bool, u64)| Expect {
        series: series.to_owned(),
        at_least,
        value,
        real_only: false,
    };
    Plan {
        topics: 1,
        coalesce_ms: 5,
        coalesce_auto: true,
        publish_every: Duration::from_millis(every_ms),
        publish_for: secs(5),
        max_latency: Duration::from_millis(1),
        expects: vec![expect("sse_wakeups_gathered_total", gathered), expect("sse_wakeups_at_once_total", at_once)],
        ..Plan::calm(clients)
    }
}

#[test]
fn auto_coalescing_gathers_a_busy_topic_and_wakes_a_quiet_or_small_one_at_once() {
    const AT_LEAST: bool = true;
    const AT_MOST: bool = false;
    // Busy: an event about every 4 ms to 80 subscribers (20,000 writes a second): after
    // the first arrivals every wake-up is held for the budget and gathers two events
    // (1,250 in all, 625 wake-ups).
    check(21, &auto_coalesced(80, 1, (AT_LEAST, 550), (AT_MOST, 5)));
    // Slower than the budget: about every 13 ms to 200 subscribers (15,000 writes a
    // second), but no second event would join a 5 ms hold: none is held (385 in all).
    check(21, &auto_coalesced(200, 10, (AT_MOST, 0), (AT_LEAST, 350)));
    // Fast but small: about every 4 ms to 4 subscribers (1,000 writes a second) is not
    // worth a hold.
    check(21, &auto_coalesced(4, 1, (AT_MOST, 0), (AT_LEAST, 1_000)));
}

#[test]
fn streams_cut_inside_the_head_a_replay_or_live_events_resume_without_loss_or_a_half_event() {
    // Client 0's link closes 5 bytes into its next connection (inside the response head);
    // client 1's inside live events; client 2's just after a stall, while it drains what
    // piled up behind a small window.
    let plan = Plan { window: 4, store: StoreMode::Durable, ..Plan::calm(3) }
        .with(2_000, Fault::Drop { client: 0 })
        .with(2_000, Fault::Cut { client: 0, after_bytes: 5 })
        .with(3_000, Fault::Cut { client: 1, after_bytes: 300 })
        .with(4_000, Fault::Stall { client: 2, duration: secs(2) })
        .with(4_500, Fault::Cut { client: 2, after_bytes: 700 });
    let outcome = check(3, &plan);
    let trace = outcome.trace.text();
    for client in 0..3 {
        assert!(
            trace.contains(&format!("client-{client}     stream ended: cut by the link")),
            "client {client}: {trace}"
        );
    }
    assert!(outcome.recoveries.iter().all(|r| *r <= bound(&plan)), "{:?}", outcome.recoveries);
}
