//! How many clients a plan runs with, and which of them need a link a fault can act on.
//!
//! Every subscriber runs on the shared host [`SHARED`], each with its own connections, as
//! browsers behind one address do. Turmoil keeps a link for every pair of hosts and on
//! each 1 ms step scans every link for every host (a step costs about hosts³ / 2), so a
//! host per faulted client, as this once was, bounded a 100-client plan with a fault
//! every 5 s at about four simulated seconds per wall second. A client a link fault names
//! (a partition, a hold, a lag) carries its connections through a [`crate::link::Link`]
//! instead. A freeze holds the turmoil links of the server's host, so it is unchanged.

use std::collections::BTreeSet;
use std::time::Duration;

use sse_plan::{Fault, Plan, Reach, Timing};

/// The host the subscribers without link faults share.
pub const SHARED: &str = "clients";

/// The most clients a simulated plan runs with.
pub const MAX_CLIENTS: usize = 1000;

/// The most clients a plan runs with when its faults can make more connection requests
/// than that arrive together: turmoil's listener queue holds 64 and panics past that.
/// Subscribers reconnect after the same `retry:` (as browsers do, with no jitter of their
/// own), so a crash or a drop of every client brings them all back in one tick, a freeze's
/// thaw delivers every request it held at once, a drain's listener no longer accepts while
/// requests queue on it until the host restarts, and a flood adds its own.
pub const MAX_CLIENTS_TOGETHER: usize = 50;

/// How many of the plan's clients the simulation runs (faults on a client past the limit
/// wrap around, as always). Faults on one client at a time leave the others' requests
/// spread out as their staggered starts made them; faults on many clients at once (and
/// slowloris connections) are counted over overlapping windows, each from the fault to a
/// catch-up bound after its heal, so that equal faults on many clients count as together.
pub fn client_limit(plan: &Plan) -> usize {
    let mut together = false;
    // (from, to, requests) for the faults that touch one client (or slowloris connections).
    let mut windows = Vec::new();
    let settle = Timing::PLANS.catch_up_bound();
    for fault in &plan.faults {
        let window = |requests: usize| (fault.at, fault.heals_at() + settle, requests);
        match fault.fault {
            // Real-only faults: the simulation skips them.
            _ if fault.fault.reach() == Reach::RealOnly => {}
            Fault::Slowloris { connections } => windows.push(window(connections)),
            // On one client's link or in one client.
            _ if matches!(fault.fault.link(), Some(Some(_))) => windows.push(window(1)),
            // On every client or on the server: a crash, a drain, a freeze, a drop of every
            // client, a flood.
            _ => together = true,
        }
    }
    together |= most_at_once(&windows) > MAX_CLIENTS_TOGETHER;
    plan.clients.min(if together { MAX_CLIENTS_TOGETHER } else { MAX_CLIENTS })
}

/// The largest sum of `requests` over windows open at one instant.
fn most_at_once(windows: &[(Duration, Duration, usize)]) -> usize {
    // Opens sort before closes at the same instant: touching windows count as overlapping.
    let mut edges: Vec<(Duration, bool, usize)> =
        windows.iter().flat_map(|&(from, to, n)| [(from, false, n), (to, true, n)]).collect();
    edges.sort();
    let (mut open, mut most) = (0, 0);
    for (_, closes, n) in edges {
        if closes {
            open -= n;
        } else {
            open += n;
            most = most.max(open);
        }
    }
    most
}

/// Which clients a link fault names, and what a healthy link is like.
#[derive(Debug, Clone)]
pub struct Placement {
    clients: usize,
    linked: BTreeSet<usize>,
    link_latency: Duration,
}

impl Placement {
    /// Notes the clients a link fault names (an index past the client count wraps
    /// around, as the faults do).
    pub fn new(plan: &Plan) -> Placement {
        let clients = plan.clients.max(1);
        let linked =
            plan.faults.iter().filter_map(|fault| link_fault_client(&fault.fault)).map(|i| i % clients).collect();
        Placement { clients, linked, link_latency: plan.max_latency.max(Duration::from_millis(1)) }
    }

    /// The latency bound of a healthy client link: the plan's, at least turmoil's 1 ms tick.
    pub fn link_latency(&self) -> Duration {
        self.link_latency
    }

    /// Whether a link fault names client `i` (an index past the client count wraps
    /// around): its connections go through a [`crate::link::Link`].
    pub fn linked(&self, i: usize) -> bool {
        self.linked.contains(&(i % self.clients))
    }
}

/// The client whose link to the server a fault changes, if it is such a fault.
fn link_fault_client(fault: &Fault) -> Option<usize> {
    match fault {
        Fault::Partition { client, .. } | Fault::Hold { client, .. } | Fault::Lag { client, .. } => Some(*client),
        // Faults the client applies itself, faults of the server or every link, and
        // real-only ones (skipped by the simulation).
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sse_plan::TimedFault;

    fn plan(clients: usize, faults: Vec<Fault>) -> Plan {
        let faults = faults.into_iter().map(|fault| TimedFault { at: Duration::from_secs(1), fault }).collect();
        Plan { faults, ..Plan::calm(clients) }
    }

    #[test]
    fn the_clients_a_link_fault_names_are_linked() {
        let second = Duration::from_secs(1);
        let placement = plan(
            6,
            vec![
                Fault::Partition { client: 1, heal_after: second },
                Fault::Hold { client: 9, release_after: second },
                Fault::Lag { client: 4, latency: second, duration: second },
                Fault::Stall { client: 0, duration: second },
                Fault::Drop { client: 2 },
                Fault::Cut { client: 5, after_bytes: 10 },
            ],
        );
        let placement = Placement::new(&placement);
        let linked: Vec<usize> = (0..6).filter(|&i| placement.linked(i)).collect();
        assert_eq!(linked, [1, 3, 4], "client 9 wraps around to 3");
        assert!(placement.linked(7), "an index past the count wraps around");
    }

    #[test]
    fn a_fault_that_sends_every_connection_request_at_once_limits_the_clients() {
        let second = Duration::from_secs(1);
        let one_client = vec![
            Fault::Partition { client: 3, heal_after: second },
            Fault::Drop { client: 1 },
            Fault::Stall { client: 2, duration: second },
            Fault::Slowloris { connections: 5 },
        ];
        assert_eq!(client_limit(&plan(1000, one_client.clone())), 1000);
        assert_eq!(client_limit(&plan(2000, vec![])), MAX_CLIENTS);
        for together in [
            Fault::Freeze { duration: second },
            Fault::Restart { restart_after: second },
            Fault::Move { restart_after: second },
            Fault::Crash { restart_after: second },
            Fault::DropAll,
            Fault::Flood { connections: 10, duration: second },
        ] {
            let faults = one_client.iter().cloned().chain([together.clone()]).collect();
            assert_eq!(client_limit(&plan(100, faults)), MAX_CLIENTS_TOGETHER, "{together:?}");
        }
        assert_eq!(client_limit(&plan(8, vec![Fault::Freeze { duration: second }])), 8);
    }

    #[test]
    fn equal_faults_on_many_clients_at_once_count_as_together() {
        let at = |ms: u64, fault: Fault| TimedFault { at: Duration::from_millis(ms), fault };
        let drops = |from_ms: u64, every_ms: u64| -> Vec<TimedFault> {
            (0..60).map(|i| at(from_ms + i * every_ms, Fault::Drop { client: i as usize })).collect()
        };
        let with = |faults: Vec<TimedFault>| Plan { faults, ..Plan::calm(100) };
        // Sixty drops in the same millisecond: their clients come back together.
        assert_eq!(client_limit(&with(drops(1_000, 0))), MAX_CLIENTS_TOGETHER);
        // The same drops over half a catch-up bound apart: never more than two windows open.
        let apart = Timing::PLANS.catch_up_bound().as_millis() as u64 / 2 + 1;
        assert_eq!(client_limit(&with(drops(1_000, apart))), 100);
        // Slowloris connections count with them.
        let mut faults = drops(1_000, apart);
        faults.push(at(1_000, Fault::Slowloris { connections: 49 }));
        assert_eq!(client_limit(&with(faults)), MAX_CLIENTS_TOGETHER);
        assert_eq!(most_at_once(&[]), 0);
    }

    #[test]
    fn a_calm_plan_links_no_client() {
        let placement = Placement::new(&plan(100, vec![]));
        assert!((0..100).all(|i| !placement.linked(i)));
    }
}
