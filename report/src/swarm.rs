//! A swarm's report: one row per seed, and the distribution of recovery times over every
//! client of every seed. The real swarm (`sse-chaos swarm`) and the simulation's
//! (`sse-simulations swarm`) both write it.

use std::time::Duration;

use crate::chart::{buckets, Chart};
use crate::html::{Report, Section};

/// A swarm's report: one row per seed, and the distribution of recovery times.
pub fn report(title: &str, rows: &[SwarmRow]) -> Report {
    let failed = rows.iter().filter(|r| !r.passed).count();
    let mut report = Report::new(title, failed == 0);
    report.failures = rows.iter().filter(|r| !r.passed).map(|r| format!("seed {}: {}", r.seed, r.note)).collect();
    report.fact("seeds", rows.len()).fact("failed", failed);
    let recoveries: Vec<f64> = rows.iter().flat_map(|r| r.recoveries.iter().map(|d| d.as_secs_f64())).collect();
    report.sections.push(Section::Heading("Recovery after the last heal, every client of every seed".into()));
    report.sections.push(Section::Chart(Chart::Histogram {
        title: format!("recovery time ({} clients of the seeds that passed)", recoveries.len()),
        x_label: "seconds".into(),
        bars: buckets(&recoveries, 20),
    }));
    report.sections.push(Section::Heading("Seeds".into()));
    report.sections.push(Section::Table {
        header: ["seed", "verdict", "acked", "faults", "max recovery", "took", "replay / note"]
            .map(String::from)
            .into(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    r.seed.to_string(),
                    if r.passed { "PASS" } else { "FAIL" }.to_owned(),
                    r.acked.map_or("—".to_owned(), |a| a.to_string()),
                    r.faults.to_string(),
                    r.recoveries.iter().max().map_or("—".to_owned(), |d| millis(*d)),
                    format!("{:.1?}", r.took),
                    r.note.clone(),
                ]
            })
            .collect(),
    });
    report
}

/// One seed of a swarm.
#[derive(Debug, Clone, Default)]
pub struct SwarmRow {
    pub seed: u64,
    pub passed: bool,
    /// Events acknowledged; `None` for a failed seed (its runs were shrunk).
    pub acked: Option<usize>,
    /// Faults in the seed's generated plan.
    pub faults: usize,
    /// Per client, after the last heal; empty for a failed seed.
    pub recoveries: Vec<Duration>,
    pub took: Duration,
    /// The replay command, or the first failure.
    pub note: String,
}

/// A duration in milliseconds, one decimal.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
