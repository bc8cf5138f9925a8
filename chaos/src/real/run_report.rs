//! A real run's HTML report ([`sse_report`]): the verdict and every failure, the seed and
//! the replay command, then timelines with the plan's fault windows shaded and each
//! client's recovery point marked: clients caught up, the server's streams and
//! connections, open fds, RSS, tasks, buffered bytes and delivery delay percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use sse_plan::Plan;
use sse_report::swarm::millis;
use sse_report::{Chart, Report, Section, Series};

use super::plan_run::RealOutcome;
use crate::load::stats::percentile;

/// The report of one run of `plan`; `replay` is the command that repeats it.
pub fn run_report(title: &str, plan: &Plan, outcome: &RealOutcome, replay: &str) -> Report {
    let mut report = Report::new(title, outcome.passed());
    report.failures = outcome.failures.clone();
    let mut recoveries = outcome.recoveries.clone();
    recoveries.sort();
    report
        .fact("seed", outcome.seed)
        .fact("replay", replay)
        .fact("took", format!("{:.1?}", outcome.took))
        .fact("events acknowledged", outcome.acked)
        .fact("clients", plan.clients)
        .fact("faults", plan.faults.len())
        .fact("calm from (last heal)", format!("{:.1?}", outcome.calm_from))
        .fact(
            "recovery after the last heal",
            match (recoveries.get(recoveries.len() / 2), recoveries.last()) {
                (Some(median), Some(max)) => format!("median {}, max {}", millis(*median), millis(*max)),
                _ => "no client".to_owned(),
            },
        );
    report.sections.extend(timelines(plan, outcome));
    report.sections.push(Section::Text { title: "Plan".into(), text: plan.to_string() });
    report.sections.push(Section::Text { title: "Trace".into(), text: outcome.trace.join("\n") });
    report
}

/// The charts of one run.
pub fn timelines(plan: &Plan, outcome: &RealOutcome) -> Vec<Section> {
    // The plan's fault windows (the trace has the times each was applied: within 250 ms).
    let windows: Vec<(f64, f64)> = plan.faults.iter().map(|f| (secs(f.at), secs(f.heals_at()))).collect();
    // Each client seat caught up again after the last heal.
    let marks: Vec<f64> = outcome.recoveries.iter().map(|r| secs(outcome.calm_from + *r)).collect();
    let timeline = |title: &str, y_label: &str, series: Vec<Series>| {
        Section::Chart(Chart::Timeline {
            title: title.to_owned(),
            y_label: y_label.to_owned(),
            span: secs(outcome.took),
            series,
            windows: windows.clone(),
            marks: marks.clone(),
        })
    };
    let gauge = |name: &str| {
        let points = outcome.observed.gauges.get(name).map(|s| s.iter().map(|(t, v)| (secs(*t), *v)).collect());
        Series::new(name, points.unwrap_or_default())
    };
    let (present, caught_up) = clients_per_second(&outcome.observed.caught_up);
    vec![
        Section::Heading("Clients".into()),
        timeline(
            "clients caught up (newest event acknowledged ≥ 1 s ago received), per second",
            "clients",
            vec![Series::new("present", present), Series::new("caught up", caught_up)],
        ),
        timeline("delivery delay from publish, per second", "ms", delay_percentiles(&outcome.deliveries)),
        Section::Heading("Server".into()),
        timeline(
            "streams, subscriptions, connections",
            "count",
            vec![gauge("sse_streams"), gauge("sse_subscriptions"), gauge("sse_connections")],
        ),
        timeline(
            "open file descriptors and tokio tasks",
            "count",
            vec![gauge("process_open_fds"), gauge("tokio_alive_tasks")],
        ),
        timeline("resident memory", "bytes", vec![gauge("process_resident_memory_bytes")]),
        timeline("buffered bytes (windows)", "bytes", vec![gauge("sse_buffered_bytes")]),
    ]
}

/// (seconds, value) pairs of one line.
type Points = Vec<(f64, f64)>;

/// Per second: how many seats had a client sampled, and how many of those were caught up
/// in every sample of that second (so a dip shows).
fn clients_per_second(caught_up: &[Vec<(Duration, bool)>]) -> (Points, Points) {
    let mut per_second: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    for samples in caught_up {
        let mut all: BTreeMap<u64, bool> = BTreeMap::new();
        for (at, ok) in samples {
            *all.entry(at.as_secs()).or_insert(true) &= *ok;
        }
        for (second, ok) in all {
            let entry = per_second.entry(second).or_default();
            entry.0 += 1;
            entry.1 += u32::from(ok);
        }
    }
    let present = per_second.iter().map(|(s, (p, _))| (*s as f64, f64::from(*p))).collect();
    let caught = per_second.iter().map(|(s, (_, c))| (*s as f64, f64::from(*c))).collect();
    (present, caught)
}

/// p50, p99 and max delivery delay (ms) of the events received in each second.
fn delay_percentiles(deliveries: &[(Duration, Duration)]) -> Vec<Series> {
    let mut per_second: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (at, delay) in deliveries {
        per_second.entry(at.as_secs()).or_default().push(delay.as_micros() as u64);
    }
    let mut series = [Series::new("p50", vec![]), Series::new("p99", vec![]), Series::new("max", vec![])];
    for (second, mut delays) in per_second {
        delays.sort_unstable();
        for (line, p) in series.iter_mut().zip([0.5, 0.99, 1.0]) {
            line.points.push((second as f64, percentile(&delays, p) as f64 / 1e3));
        }
    }
    series.into()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
