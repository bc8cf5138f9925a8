//! `sse-simulations`: replay one seed with its full trace, or run many generated plans.
//!
//! ```text
//! cargo run -p sse-simulations -- replay --seed N [--plan FILE]
//! cargo run -p sse-simulations -- swarm --seeds 200 [--from S]
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sse_plan::Plan;
use sse_report::SwarmRow;
use sse_simulations::trace::Trace;
use sse_simulations::{harness, replay_command, swarm};

#[derive(Debug, Parser)]
#[command(name = "sse-simulations", about = "Deterministic simulations of sse-server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one seed and print its whole trace, then the verdict.
    Replay {
        #[arg(long)]
        seed: u64,
        /// A plan file (fixtures format); default: the plan generated for the seed.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Run generated plans for many seeds; shrink and report failures.
    Swarm {
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Also write an HTML report: a seed table and the recovery-time distribution.
        #[arg(long)]
        report_html: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Replay { seed, plan } => {
            let plan = match plan.as_deref().map(std::fs::read_to_string).transpose() {
                Ok(Some(text)) => match text.parse::<Plan>() {
                    Ok(plan) => plan,
                    Err(error) => {
                        eprintln!("sse-simulations: bad plan: {error}");
                        return ExitCode::from(64);
                    }
                },
                Ok(None) => swarm::plan_for(seed),
                Err(error) => {
                    eprintln!("sse-simulations: cannot read the plan: {error}");
                    return ExitCode::from(66);
                }
            };
            println!("seed {seed}\nplan:\n{plan}");
            let outcome = harness::run(seed, &plan, Trace::echoing());
            println!("simulated {:?}; {} events acknowledged", outcome.simulated, outcome.acked);
            println!("recovery per client: {:?}", outcome.recoveries);
            outcome.skipped.iter().for_each(|s| println!("SKIPPED {s}"));
            if outcome.failures.is_empty() {
                println!("PASS");
                ExitCode::SUCCESS
            } else {
                outcome.failures.iter().for_each(|f| println!("FAIL {f}"));
                ExitCode::FAILURE
            }
        }
        Command::Swarm { seeds, from, report_html } => {
            let mut failed = 0;
            let mut rows = Vec::new();
            for seed in from..from + seeds {
                match swarm::check_seed(seed, true) {
                    Ok(outcome) => rows.push(SwarmRow {
                        seed,
                        passed: true,
                        acked: Some(outcome.acked),
                        faults: swarm::plan_for(seed).faults.len(),
                        recoveries: outcome.recoveries,
                        took: outcome.simulated,
                        note: replay_command(seed, None),
                    }),
                    Err(failure) => {
                        failed += 1;
                        println!("FAIL seed {seed}: {}\nshrunk plan:\n{}", failure.failures[0], failure.plan);
                        let file = format!("fixtures/sim-regressions/seed-{seed}.plan");
                        let replay = replay_command(seed, Some(&file));
                        println!("save the plan above as {file}, then replay: {replay}");
                        let note = format!(
                            "{} (shrunk to {} faults: save that plan as {file}; replay: {replay})",
                            failure.failures[0],
                            failure.plan.faults.len()
                        );
                        let faults = swarm::plan_for(seed).faults.len();
                        rows.push(SwarmRow { seed, faults, note, ..SwarmRow::default() });
                    }
                }
            }
            if let Some(path) = report_html {
                let title = format!("simulation swarm, seeds {from}..{} (took: simulated time)", from + seeds);
                if let Err(error) = std::fs::write(&path, sse_report::swarm::report(&title, &rows).to_html()) {
                    eprintln!("sse-simulations: cannot write {path}: {error}");
                    return ExitCode::from(73);
                }
                println!("HTML report: {path}");
            }
            println!("{} passed, {failed} failed", seeds - failed);
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
