//! The oracle: what every run must satisfy, judged from the publisher's acknowledgements
//! and every subscriber's record.
//!
//! - no acknowledged event on a subscribed topic is missing, unless a reset notice
//!   covered it (the client's position was before it and the stream said history was
//!   lost, and the replay after the notice started beyond it), or a simulated power cut
//!   took it back before the store synced it (the `interval` store's documented loss),
//!   acknowledged before the server was back from the cut;
//! - no event is received twice; within one epoch ids strictly increase across
//!   reconnects;
//! - every client has caught up within a bound after the last fault heals;
//! - the plan's `expect` checks hold on the server's metrics at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sse_server::stream::id::EventId;

use crate::plan::{metric_value, Plan};
use crate::record::{Acked, Seen};

/// One client's verdict.
#[derive(Debug, Default)]
pub struct ClientReport {
    /// Failures found, each a readable sentence naming the first bad event.
    pub failures: Vec<String>,
    /// From `calm_from` until the last expected event arrived (zero if it already had).
    pub recovery: Duration,
}

/// The part of a run a client was there for, and so what it is owed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// The opening position of its first stream, and when it arrived: it is owed the
    /// events after it (in its epoch, and every event of another history). `None`: every
    /// event of the run.
    pub from: Option<(EventId, Duration)>,
    /// It left for good: it is owed only what was acknowledged before this time (from
    /// the run's start). `None`: it stayed to the end.
    pub owed_until: Option<Duration>,
}

impl Presence {
    /// A client there from before the first publish to the end.
    pub const WHOLE_RUN: Presence = Presence { from: None, owed_until: None };

    /// Whether the client is owed `event`.
    pub fn owes(&self, event: &Acked) -> bool {
        let after_join = match (&self.from, EventId::parse(&event.id)) {
            (Some((from, _)), Some(id)) => id.epoch != from.epoch || id.seq > from.seq,
            _ => true,
        };
        after_join && self.owed_until.is_none_or(|until| event.at <= until)
    }

    /// An event at or below its opening position although it was published only after
    /// the position arrived: the position ran ahead of the history (an event at or below
    /// a position was stored before the stream opened).
    fn vouched_too_early(&self, event: &Acked) -> bool {
        match (&self.from, EventId::parse(&event.id)) {
            (Some((from, at)), Some(id)) => id.epoch == from.epoch && id.seq <= from.seq && event.sent > *at,
            _ => false,
        }
    }
}

/// Judges one client that followed `topics` for the whole run.
pub fn judge(
    name: &str,
    topics: &BTreeSet<String>,
    seen: &[Seen],
    acked: &[Acked],
    forgotten: &BTreeMap<String, Duration>,
    calm_from: Duration,
) -> ClientReport {
    judge_present(name, topics, &Presence::WHOLE_RUN, seen, acked, forgotten, calm_from)
}

/// Judges one client that followed `topics` while `presence` says it was there.
pub fn judge_present(
    name: &str,
    topics: &BTreeSet<String>,
    presence: &Presence,
    seen: &[Seen],
    acked: &[Acked],
    forgotten: &BTreeMap<String, Duration>,
    calm_from: Duration,
) -> ClientReport {
    let mut report = ClientReport::default();
    let mut data_seen = BTreeSet::new();
    let mut last_in_epoch: BTreeMap<u32, u64> = BTreeMap::new();
    let mut received_at: BTreeMap<&str, Duration> = BTreeMap::new();
    for item in seen {
        let Seen::Event(event) = item else { continue };
        if !data_seen.insert(event.data.as_str()) {
            report.failures.push(format!("{name}: duplicate event {} {} at {:?}", event.id, event.data, event.at));
        }
        match EventId::parse(&event.id) {
            None => report.failures.push(format!("{name}: unreadable id {:?}", event.id)),
            Some(EventId { epoch, seq }) => {
                let last = last_in_epoch.entry(epoch).or_insert(0);
                if seq <= *last {
                    report
                        .failures
                        .push(format!("{name}: id {} after seq {} (out of order) at {:?}", event.id, last, event.at));
                }
                *last = seq.max(*last);
            }
        }
        received_at.insert(event.data.as_str(), event.at);
    }
    let early = acked.iter().find(|a| topics.contains(&a.topic) && presence.vouched_too_early(a));
    if let (Some(early), Some((from, at))) = (early, presence.from) {
        report.failures.push(format!(
            "{name}: its opening position {from} (at {at:?}) is at or past event {} {}, published only at {:?}",
            early.id, early.data, early.sent
        ));
    }
    for event in acked.iter().filter(|a| topics.contains(&a.topic) && presence.owes(a)) {
        match received_at.get(event.data.as_str()) {
            Some(at) => report.recovery = report.recovery.max(at.saturating_sub(calm_from)),
            None if excused_by_reset(seen, &event.id) => {}
            // Taken back by a power cut; acknowledged before the server was `back`.
            None if forgotten.get(&event.id).is_some_and(|back| event.at < *back) => {}
            None => report.failures.push(format!(
                "{name}: acknowledged event {} {} (acked at {:?}) never arrived",
                event.id, event.data, event.at
            )),
        }
    }
    report
}

/// The plan's `expect` checks against the server's `/metrics` text at the end of a run;
/// `expect_real` ones too where `real`. One failure sentence per check that does not hold.
pub fn expectations(plan: &Plan, exposition: &str, real: bool) -> Vec<String> {
    plan.expects
        .iter()
        .filter(|expect| real || !expect.real_only)
        .filter_map(|expect| {
            let observed = metric_value(exposition, &expect.series);
            (!expect.holds(observed)).then(|| format!("{expect}: the server reports {observed:?}"))
        })
        .collect()
}

/// Ids the server acknowledged more than once: an id must never name two events, even
/// after a power cut took the first one back.
pub fn reused_ids(acked: &[Acked]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    acked
        .iter()
        .filter(|a| !seen.insert(a.id.as_str()))
        .map(|a| format!("id {} acknowledged for two events (the second: {} at {:?})", a.id, a.data, a.at))
        .collect()
}

/// Whether a reset notice tells this client that `id` was lost: before the notice its
/// position in that epoch was below `id`, and after it the replay began above `id` (or
/// in another epoch).
fn excused_by_reset(seen: &[Seen], id: &str) -> bool {
    let Some(EventId { epoch, seq }) = EventId::parse(id) else { return false };
    seen.iter().enumerate().any(|(at, item)| {
        if !matches!(item, Seen::Reset { .. }) {
            return false;
        }
        let in_epoch = |s: &Seen| match s {
            Seen::Event(e) => EventId::parse(&e.id).filter(|id| id.epoch == epoch).map(|id| id.seq),
            Seen::Reset { .. } => None,
        };
        let before = seen[..at].iter().rev().find_map(in_epoch).unwrap_or(0);
        let after = seen[at + 1..].iter().find_map(in_epoch);
        before < seq && after.is_none_or(|first| first > seq)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Received;

    fn ev(id: &str, data: &str) -> Seen {
        Seen::Event(Received { at: Duration::from_secs(1), id: id.into(), data: data.into() })
    }
    fn ack(id: &str, data: &str) -> Acked {
        Acked { at: Duration::ZERO, sent: Duration::ZERO, id: id.into(), topic: "t".into(), data: data.into() }
    }

    #[test]
    fn finds_loss_duplicates_and_disorder_and_honours_resets() {
        let topics: BTreeSet<String> = ["t".to_owned()].into();
        let acked = [ack("0000000e-1", "a"), ack("0000000e-2", "b"), ack("0000000e-3", "c")];
        let ok = judge(
            "c",
            &topics,
            &[ev("0000000e-1", "a"), ev("0000000e-2", "b"), ev("0000000e-3", "c")],
            &acked,
            &BTreeMap::new(),
            Duration::ZERO,
        );
        assert!(ok.failures.is_empty(), "{:?}", ok.failures);
        let lost = judge(
            "c",
            &topics,
            &[ev("0000000e-1", "a"), ev("0000000e-3", "c")],
            &acked,
            &BTreeMap::new(),
            Duration::ZERO,
        );
        assert_eq!(lost.failures.len(), 1, "{:?}", lost.failures);
        let twice = judge(
            "c",
            &topics,
            &[ev("0000000e-1", "a"), ev("0000000e-2", "b"), ev("0000000e-2", "b"), ev("0000000e-3", "c")],
            &acked,
            &BTreeMap::new(),
            Duration::ZERO,
        );
        assert_eq!(twice.failures.len(), 2, "{:?}", twice.failures);
        let reset = Seen::Reset { at: Duration::ZERO, reason: "evicted".into() };
        let excused = judge(
            "c",
            &topics,
            &[ev("0000000e-1", "a"), reset.clone(), ev("0000000e-3", "c")],
            &acked,
            &BTreeMap::new(),
            Duration::ZERO,
        );
        assert!(excused.failures.is_empty(), "{:?}", excused.failures);
        let not_excused = judge(
            "c",
            &topics,
            &[ev("0000000e-1", "a"), reset, ev("0000000e-1", "x"), ev("0000000e-3", "c")],
            &acked,
            &BTreeMap::new(),
            Duration::ZERO,
        );
        assert!(!not_excused.failures.is_empty(), "a replay that restarts below the event does not excuse it");
        let cut: BTreeMap<String, Duration> = [("0000000e-2".to_owned(), Duration::from_secs(1))].into();
        let taken_back =
            judge("c", &topics, &[ev("0000000e-1", "a"), ev("0000000e-3", "c")], &acked, &cut, Duration::ZERO);
        assert!(taken_back.failures.is_empty(), "a power cut excuses what it took back: {:?}", taken_back.failures);
        let mut reacked = acked.to_vec();
        reacked.push(Acked { at: Duration::from_secs(2), ..ack("0000000e-2", "d") });
        assert_eq!(reused_ids(&reacked).len(), 1);
        assert!(reused_ids(&acked).is_empty());
    }

    #[test]
    fn a_reset_excuses_only_what_it_covered_and_a_power_cut_only_what_came_before_the_return() {
        let topics: BTreeSet<String> = ["t".to_owned()].into();
        let acked: Vec<Acked> =
            (1..=5).map(|n| ack(&format!("0000000e-{n}"), ["a", "b", "c", "d", "e"][n - 1])).collect();
        let reset = || Seen::Reset { at: Duration::ZERO, reason: "evicted".into() };
        let failures = |seen: &[Seen], forgotten: &BTreeMap<String, Duration>| {
            judge("c", &topics, seen, &acked, forgotten, Duration::ZERO).failures
        };
        let none = BTreeMap::new();
        // b went missing before the notice (the client was past it already): not excused;
        // d, between the notice's before and after, is.
        let gap_before = [ev("0000000e-1", "a"), ev("0000000e-3", "c"), reset(), ev("0000000e-5", "e")];
        assert_eq!(failures(&gap_before, &none).len(), 1, "{:?}", failures(&gap_before, &none));
        // Another event under b's id before the notice: b itself is still owed.
        let wrong_before = [ev("0000000e-1", "a"), ev("0000000e-2", "x"), reset(), ev("0000000e-3", "c")];
        let found = failures(&wrong_before, &none);
        assert!(found.iter().any(|f| f.contains("0000000e-2 b")), "{found:?}");
        // The replay after the notice starts at b's id with other data: b is not covered.
        let wrong_after = [ev("0000000e-1", "a"), reset(), ev("0000000e-2", "x"), ev("0000000e-3", "c")];
        let found = failures(&wrong_after, &none);
        assert!(found.iter().any(|f| f.contains("0000000e-2 b")), "{found:?}");
        // A notice whose replay is in another history covers what this one lost after it.
        let new_history = [ev("0000000e-1", "a"), reset(), ev("0000000f-1", "y")];
        let found = failures(&new_history, &none);
        assert!(found.iter().all(|f| !f.contains("0000000e-")), "the reset covers e-2..e-5: {found:?}");
        // A notice before anything arrived in this epoch, followed by this epoch's replay.
        let early =
            [reset(), ev("0000000e-2", "b"), ev("0000000e-3", "c"), ev("0000000e-4", "d"), ev("0000000e-5", "e")];
        assert!(failures(&early, &none).is_empty(), "a lost before the first event: {:?}", failures(&early, &none));
        // A power cut took b back; the server was back at 1 s. Acknowledged at 0 s: excused;
        // acknowledged exactly when the server was back: owed.
        let cut: BTreeMap<String, Duration> = [("0000000e-2".to_owned(), Duration::from_secs(1))].into();
        let without_b = [ev("0000000e-1", "a"), ev("0000000e-3", "c"), ev("0000000e-4", "d"), ev("0000000e-5", "e")];
        assert!(failures(&without_b, &cut).is_empty());
        let back_at_zero: BTreeMap<String, Duration> = [("0000000e-2".to_owned(), Duration::ZERO)].into();
        assert_eq!(failures(&without_b, &back_at_zero).len(), 1, "acknowledged once the server was back");
    }

    #[test]
    fn expect_lines_are_judged_against_the_metrics_and_real_only_ones_only_for_real() {
        let plan: Plan = "clients 1\nexpect sse_streams >= 2\nexpect_real sse_connections <= 0\n".parse().unwrap();
        let both_fail = "sse_streams 1\nsse_connections 3\n";
        assert_eq!(expectations(&plan, both_fail, true).len(), 2);
        let simulated = expectations(&plan, both_fail, false);
        assert_eq!(simulated.len(), 1, "the simulation skips expect_real: {simulated:?}");
        assert!(simulated[0].contains("sse_streams") && simulated[0].contains("Some(1.0)"), "{simulated:?}");
        assert!(expectations(&plan, "sse_streams 2\nsse_connections 0\n", true).is_empty());
    }

    #[test]
    fn a_client_that_joined_late_or_left_is_owed_only_its_part() {
        let topics: BTreeSet<String> = ["t".to_owned()].into();
        let acked = [
            Acked { at: Duration::from_secs(1), sent: Duration::from_secs(1), ..ack("0000000e-1", "a") },
            Acked { at: Duration::from_secs(2), sent: Duration::from_secs(2), ..ack("0000000e-2", "b") },
            Acked { at: Duration::from_secs(3), sent: Duration::from_secs(3), ..ack("0000000e-3", "c") },
        ];
        let joined =
            Presence { from: EventId::parse("0000000e-1").map(|id| (id, Duration::from_secs(1))), owed_until: None };
        let judged = |presence: &Presence, seen: &[Seen]| {
            judge_present("c", &topics, presence, seen, &acked, &BTreeMap::new(), Duration::ZERO).failures
        };
        assert!(judged(&joined, &[ev("0000000e-2", "b"), ev("0000000e-3", "c")]).is_empty());
        assert_eq!(judged(&joined, &[ev("0000000e-3", "c")]).len(), 1, "b came after the join");
        let left = Presence { from: None, owed_until: Some(Duration::from_secs(2)) };
        assert!(judged(&left, &[ev("0000000e-1", "a"), ev("0000000e-2", "b")]).is_empty());
        assert_eq!(judged(&left, &[ev("0000000e-1", "a")]).len(), 1, "b was acknowledged before it left");
        let new_history =
            Presence { from: EventId::parse("0000000f-9").map(|id| (id, Duration::ZERO)), owed_until: None };
        assert_eq!(judged(&new_history, &[]).len(), 3, "events of another epoch are owed");
        let ahead = Presence { from: EventId::parse("0000000e-3").map(|id| (id, Duration::ZERO)), owed_until: None };
        let failures = judged(&ahead, &[]);
        assert_eq!(failures.len(), 1, "a position past events published 1 to 3 s later: {failures:?}");
        let on_time = Presence { from: EventId::parse("0000000e-3").map(|id| (id, Duration::from_secs(3))), ..ahead };
        assert!(judged(&on_time, &[]).is_empty(), "a position may cover what was published before it arrived");
    }
}
