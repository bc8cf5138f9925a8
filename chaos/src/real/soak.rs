//! A long real run (soak): one long-lived server, clients behind their
//! own proxies, and client-side faults drawn without end from the plan generator (the
//! client-side faults of the plans it draws for `seed`, `seed + 1`, …, a few per
//! window), run by the real backend and judged by the one oracle. Clients come and go:
//! each seat's client leaves for good after a seeded 3 to 20 s (never inside its own
//! faults), and a new one takes the seat 0.1 to 2 s later, subscribing afresh; each is
//! judged for the part of the run it was there. On top it reports what long runs are
//! for:
//!
//! - **availability**: the share of 100 ms samples in which a client was caught up (it
//!   had the newest event acknowledged on its topics at least a second earlier). Overall
//!   it counts the time outside the client's own faults (from a fault's start to its heal
//!   plus the catch-up bound), so it measures whether faults stay with the client they hit
//!   and end within the bound; per fault kind it counts the time inside them;
//! - **leak slopes**: RSS, open fds, tokio tasks, streams, subscriptions, connections and buffered bytes,
//!   sampled every 2 s, fitted with a line after a warm-up quarter; a slope more than three
//!   standard errors above zero and above a floor per hour is a leak (RSS is judged only
//!   on runs of ten minutes or more: before that its warm-up reads as a trend).
//!
//! It fails on any oracle failure (a lost or duplicated acknowledged event), a leak, or an
//! overall availability under [`AVAILABILITY_FLOOR`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use sse_plan::search::plan_for;
use sse_plan::{Plan, StoreMode, TimedFault, Timing};

use sse_server::rng::SeededRng;

use super::observe::{Slope, GAUGES};
use super::plan_run::{self, RealOutcome};
use super::roster::{Churn, LEAVES};
use super::run_report;

/// Faults are drawn per window of this length.
const WINDOW: Duration = Duration::from_secs(15);
/// At most this many faults per window.
const FAULTS_PER_WINDOW: usize = 2;
/// The overall availability a soak must reach.
pub const AVAILABILITY_FLOOR: f64 = 0.9999;

/// Runs shorter than this report the RSS trend without judging it.
const RSS_JUDGED_AFTER: Duration = Duration::from_secs(600);

/// Per gauge, the smallest trend per hour that counts as a leak.
fn leak_floor(gauge: &str) -> f64 {
    match gauge {
        "process_resident_memory_bytes" => 8.0 * 1024.0 * 1024.0,
        "sse_buffered_bytes" => 1024.0 * 1024.0,
        _ => 20.0,
    }
}

/// The soak's plan: `clients` clients on three topics, publishing for `duration`, and
/// client-side faults drawn window by window from the generator. The store is the
/// in-memory one: the disk store's page cache (64 MiB) grows with what is written, a
/// bounded climb a one-hour trend would read as a leak; the durable path has its own
/// crash tests.
pub fn plan(seed: u64, duration: Duration, clients: usize) -> Plan {
    let mut plan = Plan { store: StoreMode::Fresh, topics: 3, window: 32, ..Plan::calm(clients) };
    plan.publish_for = duration;
    plan.publish_every = Duration::from_millis(50);
    let end = plan.publish_until();
    let windows = (duration.as_millis() / WINDOW.as_millis()).max(1) as u64;
    for w in 0..windows {
        let drawn = plan_for(seed.wrapping_add(w));
        let start = Duration::from_secs(1) + WINDOW * w as u32;
        let picked = drawn.faults.into_iter().filter(|f| f.fault.link().is_some()).take(FAULTS_PER_WINDOW);
        for f in picked {
            // The generator starts faults from 1.5 s into its plan; keep the offset.
            let offset = f.at.saturating_sub(Duration::from_millis(1_500)).as_millis() % WINDOW.as_millis();
            let at = start + Duration::from_millis(offset as u64);
            let fault = TimedFault { at, fault: f.fault };
            if fault.heals_at() < end {
                plan.faults.push(fault);
            }
        }
    }
    plan.faults.sort_by_key(|f| f.at);
    plan
}

/// What a soak found.
#[derive(Debug)]
pub struct SoakReport {
    pub seed: u64,
    pub plan: Plan,
    pub outcome: RealOutcome,
    /// Overall availability (outside each client's own faults).
    pub availability: f64,
    /// Per client, over the whole run.
    pub per_client: Vec<f64>,
    /// Per fault kind, inside the faulted client's fault windows.
    pub per_kind: BTreeMap<&'static str, f64>,
    pub slopes: BTreeMap<&'static str, Slope>,
    pub failures: Vec<String>,
}

impl SoakReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The HTML report: the run's timelines, availability and the leak slopes; `repeat`
    /// is the command that runs it again.
    pub fn html(&self, repeat: &str) -> sse_report::Report {
        let title = format!("soak, seed {}, {:.0?}", self.seed, self.outcome.took);
        let mut report = run_report::run_report(&title, &self.plan, &self.outcome, repeat);
        report.passed = self.passed();
        report.failures = self.failures.clone();
        report
            .fact("availability outside each client's own faults", format!("{:.4}%", self.availability * 100.0))
            .fact("clients left and replaced", self.left());
        let rows = self
            .slopes
            .iter()
            .map(|(gauge, s)| {
                vec![
                    gauge.to_string(),
                    format!("{:+.2}", s.per_hour),
                    format!("{:.2}", s.stderr_per_hour),
                    s.samples.to_string(),
                ]
            })
            .collect();
        let header = ["gauge", "slope per hour", "± (standard error)", "samples"].map(String::from).into();
        report.sections.insert(0, sse_report::Section::Table { header, rows });
        report.sections.insert(0, sse_report::Section::Heading("Leak slopes".into()));
        report
    }

    /// Clients that left for good during the run (each replaced by a new one).
    pub fn left(&self) -> usize {
        self.outcome.trace.iter().filter(|l| l.contains(LEAVES)).count()
    }

    /// The report as one JSON object (for the nightly report).
    pub fn to_json(&self) -> String {
        let slopes: serde_json::Map<String, serde_json::Value> = self
            .slopes
            .iter()
            .map(|(k, s)| {
                let value = serde_json::json!({"per_hour": s.per_hour, "stderr_per_hour": s.stderr_per_hour, "samples": s.samples});
                ((*k).to_owned(), value)
            })
            .collect();
        serde_json::json!({
            "soak_seed": self.seed,
            "passed": self.passed(),
            "seconds": self.outcome.took.as_secs_f64(),
            "acked": self.outcome.acked,
            "faults": self.outcome.trace.iter().filter(|l| l.contains(" apply ")).count(),
            "clients_left": self.left(),
            "availability": self.availability,
            "availability_per_client": self.per_client,
            "availability_per_fault_kind": self.per_kind,
            "slopes": slopes,
            "failures": self.failures,
        })
        .to_string()
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let faults = self.outcome.trace.iter().filter(|l| l.contains(" apply ")).count();
        writeln!(
            f,
            "{verdict} soak seed {} over {:.0?}: {} events acknowledged, {faults} faults, {} clients left and were replaced",
            self.seed,
            self.outcome.took,
            self.outcome.acked,
            self.left()
        )?;
        writeln!(f, "  availability outside each client's own faults: {:.4}%", self.availability * 100.0)?;
        let per_client: Vec<String> = self.per_client.iter().map(|a| format!("{:.2}%", a * 100.0)).collect();
        writeln!(f, "  per client, whole run: {}", per_client.join(" "))?;
        for (kind, a) in &self.per_kind {
            writeln!(f, "  during {kind} (the faulted client): {:.2}%", a * 100.0)?;
        }
        for (gauge, s) in &self.slopes {
            writeln!(f, "  {gauge}: {:+.1} ± {:.1} per hour ({} samples)", s.per_hour, s.stderr_per_hour, s.samples)?;
        }
        for failure in &self.failures {
            writeln!(f, "  FAILED: {failure}")?;
        }
        Ok(())
    }
}

/// How long a seat's client stays, at least and at most.
const STAYS: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(20));
/// How long a seat stays empty between clients, at most (at least 100 ms).
const EMPTY_AT_MOST: Duration = Duration::from_secs(2);

/// When each seat's client leaves and how soon the next one comes: seeded, and neither
/// the leave nor the empty seat after it inside that seat's own faults (from a fault's
/// start to its heal plus the catch-up bound), so a client that leaves was caught up when
/// it left and every fault finds a client; nobody leaves in the last catch-up bound
/// before publishing ends.
pub fn churn(seed: u64, plan: &Plan) -> Vec<Churn> {
    let rng = SeededRng::new(seed ^ 0xc4_u64.rotate_left(56));
    let bound = Timing::PLANS.catch_up_bound();
    let last = plan.publish_until().saturating_sub(bound);
    let draw =
        |(low, high): (Duration, Duration)| low + Duration::from_millis(rng.up_to((high - low).as_millis() as u64));
    let mut churn = Vec::new();
    for seat in 0..plan.clients {
        let own: Vec<(Duration, Duration)> = plan
            .faults
            .iter()
            .filter(|f| f.fault.link().is_some_and(|c| c.is_none_or(|c| c % plan.clients == seat)))
            .map(|f| (f.at, f.heals_at() + bound))
            .collect();
        let mut at = Duration::from_secs(1);
        loop {
            at += draw(STAYS);
            // Neither the leave nor the empty seat after it meets one of the seat's faults.
            while let Some((_, end)) = own.iter().find(|(start, end)| at <= *end && at + EMPTY_AT_MOST >= *start) {
                at = *end + Duration::from_millis(100);
            }
            if at > last {
                break;
            }
            let gap = draw((Duration::from_millis(100), EMPTY_AT_MOST));
            churn.push(Churn { at, seat, gap });
            at += gap;
        }
    }
    churn.sort_by_key(|c| (c.at, c.seat));
    churn
}

/// Runs a soak of `duration` under `seed` with `clients` clients at a time.
pub async fn run(seed: u64, duration: Duration, clients: usize) -> anyhow::Result<SoakReport> {
    let plan = plan(seed, duration, clients);
    let churn = churn(seed, &plan);
    let outcome = plan_run::run_churning(seed, &plan, churn).await?;
    Ok(judge(seed, &plan, outcome))
}

fn ratio(hits: usize, total: usize) -> f64 {
    if total == 0 {
        1.0
    } else {
        hits as f64 / total as f64
    }
}

/// Availability and slopes from what the run observed.
fn judge(seed: u64, plan: &Plan, outcome: RealOutcome) -> SoakReport {
    let bound = Timing::PLANS.catch_up_bound();
    let mut failures = outcome.failures.clone();
    let (mut outside, mut outside_hits) = (0, 0);
    let mut per_client = Vec::new();
    let mut kinds: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let from = Duration::from_secs(2);
    let until = plan.publish_until();
    for (client, samples) in outcome.observed.caught_up.iter().enumerate() {
        let own: Vec<(Duration, Duration, &'static str)> = plan
            .faults
            .iter()
            .filter(|f| f.fault.link().is_some_and(|c| c.is_none_or(|c| c % plan.clients == client)))
            .map(|f| (f.at, f.heals_at() + bound, f.fault.kind()))
            .collect();
        let judged: Vec<&(Duration, bool)> = samples.iter().filter(|(t, _)| *t >= from && *t <= until).collect();
        per_client.push(ratio(judged.iter().filter(|(_, ok)| *ok).count(), judged.len()));
        for (t, ok) in judged {
            let inside: Vec<&'static str> =
                own.iter().filter(|(a, b, _)| t >= a && t <= b).map(|(_, _, k)| *k).collect();
            if inside.is_empty() {
                outside += 1;
                outside_hits += usize::from(*ok);
            }
            for k in inside {
                let entry = kinds.entry(k).or_default();
                entry.0 += 1;
                entry.1 += usize::from(*ok);
            }
        }
    }
    let availability = ratio(outside_hits, outside);
    if availability < AVAILABILITY_FLOOR {
        failures.push(format!(
            "availability outside the clients' own faults {:.4}% is under {:.2}% ({} of {outside} samples caught up)",
            availability * 100.0,
            AVAILABILITY_FLOOR * 100.0,
            outside_hits
        ));
    }
    let per_kind = kinds.into_iter().map(|(k, (n, hits))| (k, ratio(hits, n))).collect();
    let warm = outcome.took / 4;
    let mut slopes = BTreeMap::new();
    for gauge in GAUGES {
        let series: Vec<(Duration, f64)> = outcome
            .observed
            .gauges
            .get(gauge)
            .map(|s| s.iter().copied().filter(|(t, _)| *t >= warm).collect())
            .unwrap_or_default();
        // Memory warms up for minutes (allocator arenas, windows filling): its trend is
        // judged only on long runs, and reported always.
        let judged = gauge != "process_resident_memory_bytes" || outcome.took >= RSS_JUDGED_AFTER;
        if let Some(slope) = Slope::fit(&series) {
            if judged && slope.is_leak(leak_floor(gauge)) {
                failures.push(format!(
                    "{gauge} trends {:+.1} ± {:.1} per hour: a leak",
                    slope.per_hour, slope.stderr_per_hour
                ));
            }
            slopes.insert(gauge, slope);
        } else {
            failures.push(format!("{gauge}: too few samples to fit a trend ({})", series.len()));
        }
    }
    SoakReport { seed, plan: plan.clone(), outcome, availability, per_client, per_kind, slopes, failures }
}
