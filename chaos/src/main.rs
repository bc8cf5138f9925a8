//! `sse-chaos`: load generation, benchmarks and real chaos runs against `sse-server`
//! (the modules are in the library, `lib.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sse_chaos::bench::{
    cluster_idle, failover as failover_bench, fanout, idle, publish as publish_bench, resume as resume_bench,
};
use sse_chaos::load::tls_client::TlsConnect;
use sse_chaos::real::{plan_run, run_report, soak};
use sse_plan::generate::Size;
use sse_plan::search::{self, Shrink};
use sse_report::SwarmRow;

#[derive(Debug, Parser)]
#[command(name = "sse-chaos", about = "Load and benchmarks for sse-server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open N idle streams and report the server's RSS growth per stream.
    Idle {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// The server's pid, to read its RSS from /proc.
        #[arg(long)]
        server_pid: u32,
        /// Streams to open.
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        /// Connect over TLS, trusting this CA certificate (PEM).
        #[arg(long)]
        tls_ca: Option<std::path::PathBuf>,
        /// Give up after this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Subscribers on one topic, one publisher at a fixed rate; reports deliveries per
    /// server CPU-second and delivery latency.
    Fanout {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// The server's pid, to read its CPU time from /proc.
        #[arg(long)]
        server_pid: u32,
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Events published per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Event body size in bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// How long to publish.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Every connection (streams, publisher, metrics) over TLS, trusting this CA
        /// certificate (PEM).
        #[arg(long)]
        tls_ca: Option<std::path::PathBuf>,
    },
    /// N publishers publishing back to back; acknowledged publishes per second and
    /// publish latency.
    Publish {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Concurrent kept-alive publishers.
        #[arg(long, default_value_t = 64)]
        publishers: usize,
        /// Event body size in bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// How long to publish.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Run one plan for real (the fixtures format, the same file `sse-simulations replay
    /// --plan` takes) and judge it with the oracle.
    Replay {
        /// The plan file.
        #[arg(long)]
        plan: String,
        /// Seeds the clients' topics, the publisher and Toxiproxy.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also append the verdict as a JSON line to this file.
        #[arg(long)]
        report: Option<String>,
        /// Also write a self-contained HTML report (timelines, fault windows) to this file.
        #[arg(long)]
        report_html: Option<String>,
    },
    /// Run the plans the generator draws for seeds `from..from+seeds` for real (sized for
    /// real time: about 10 s each); shrink a failure (a step fails if it fails in `k` of
    /// `n` runs), write its plan to fixtures/real-regressions/ and print it.
    Swarm {
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Real runs one shrink may spend.
        #[arg(long, default_value_t = 24)]
        shrink_budget: usize,
        #[arg(long, default_value_t = 2)]
        k: usize,
        #[arg(long, default_value_t = 3)]
        n: usize,
        /// Also append each seed's verdict (and a failure's shrunk plan) as a JSON line.
        #[arg(long)]
        report: Option<String>,
        /// Generate cluster plans (2–3 nodes on a JetStream cluster, node and backplane
        /// faults) instead of one-server plans.
        #[arg(long)]
        cluster: bool,
        /// Also write an HTML report (a seed table, the recovery-time distribution).
        #[arg(long)]
        report_html: Option<String>,
    },
    /// A long run: client-side faults drawn from the generator for `duration` on one
    /// server; reports availability and leak slopes, fails on loss, a leak or
    /// availability under 99.99%.
    Soak {
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Also append the report as a JSON line to this file.
        #[arg(long)]
        report: Option<String>,
        /// Also write a self-contained HTML report (timelines, fault windows) to this file.
        #[arg(long)]
        report_html: Option<String>,
    },
    /// Publish a topic's history and print `RESUME_FROM=<id>` (the id before it).
    History {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Topic.
        #[arg(long, default_value = "herd")]
        topic: String,
        /// Events to publish.
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Event body size in bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
    },
    /// Cluster mode: idle streams spread over several server processes on one JetStream
    /// cluster, held with heartbeats; summed server RSS per stream.
    ClusterIdle {
        /// `sse-server` processes (each may hold about 19,800 streams here).
        #[arg(long, default_value_t = 6)]
        nodes: usize,
        /// Streams over all nodes.
        #[arg(long, default_value_t = 100_000)]
        streams: usize,
        /// How long the open streams are held.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// The servers' heartbeat interval.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// Events per second published to every stream during the hold (0: idle).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// The README's screenshots, taken with headless Chromium: the console page with a few
    /// events (`console.png`) and the top of an HTML run report (`report.png`).
    Screenshots {
        /// Where the PNGs go.
        #[arg(long, default_value = "docs")]
        out: String,
        /// An HTML report (`replay --report-html`) to take `report.png` of.
        #[arg(long)]
        report: Option<String>,
    },
    /// Holds idle streams for `cluster-idle` (one process per node).
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        streams: usize,
        #[arg(long, value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// Cluster mode: kill -9 of the JetStream stream's leader under load, round after
    /// round; time until publishes are acknowledged again and every subscriber caught up.
    Failover {
        /// Leader kills.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Subscribers, spread over two nodes.
        #[arg(long, default_value_t = 64)]
        subscribers: usize,
        /// Publishes per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
    },
    /// Many clients resume one topic from one id; time until all have every event.
    Resume {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// The server's pid, to read its RSS from /proc.
        #[arg(long)]
        server_pid: u32,
        /// Topic.
        #[arg(long, default_value = "herd")]
        topic: String,
        /// The id to resume from (printed by `history`).
        #[arg(long)]
        from: String,
        /// Clients.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Events each client must receive.
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Give up after this long.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Idle { addr, server_pid, streams, tls_ca, timeout } => {
                let tls = tls_ca.as_deref().map(TlsConnect::trusting).transpose()?;
                tokio::time::timeout(timeout, idle::run(addr, server_pid, streams, tls)).await??
            }
            Command::Fanout { addr, server_pid, subscribers, rate, size, duration, tls_ca } => {
                let tls = tls_ca.as_deref().map(TlsConnect::trusting).transpose()?;
                fanout::run(fanout::Plan { addr, server_pid, subscribers, rate, size, duration, tls }).await?
            }
            Command::Publish { addr, publishers, size, duration } => {
                publish_bench::run(publish_bench::Plan { addr, publishers, size, duration }).await?
            }
            Command::Replay { plan, seed, report, report_html } => {
                let text = std::fs::read_to_string(&plan).with_context(|| format!("read {plan}"))?;
                let parsed: sse_plan::Plan = text.parse().map_err(|e| anyhow::anyhow!("{plan}: {e}"))?;
                println!("seed {seed}\nplan:\n{parsed}");
                let outcome = plan_run::run(seed, &parsed).await?;
                print_outcome(&outcome);
                let verdict = serde_json::json!({
                    "kind": "replay", "plan": plan, "seed": seed, "passed": outcome.passed(),
                    "failures": outcome.failures, "acked": outcome.acked, "took_s": outcome.took.as_secs_f64(),
                });
                append_json(report.as_deref(), &verdict)?;
                let replay = format!("cargo run --release -p sse-chaos -- replay --plan {plan} --seed {seed}");
                let html = || run_report::run_report(&format!("replay {plan}, seed {seed}"), &parsed, &outcome, &replay);
                write_html(report_html.as_deref(), html)?;
                if !outcome.passed() {
                    anyhow::bail!("the plan failed; replay: {replay}");
                }
            }
            Command::Swarm { seeds, from, shrink_budget, k, n, report, cluster, report_html } => {
                let size = if cluster { Size::Cluster } else { Size::RealTime };
                let handle = tokio::runtime::Handle::current();
                let shrink = Shrink { budget: shrink_budget, k, n };
                let mut failed = 0;
                let mut rows = Vec::new();
                for seed in from..from + seeds {
                    let started = tokio::time::Instant::now();
                    let result = tokio::task::block_in_place(|| {
                        search::check_seed(
                            seed,
                            size,
                            Some(shrink),
                            |plan| handle.block_on(plan_run::run(seed, plan)),
                            |outcome| match outcome {
                                Ok(outcome) => outcome.failures.clone(),
                                Err(error) => vec![format!("the run could not complete: {error:#}")],
                            },
                        )
                    });
                    match result {
                        Ok(outcome) => {
                            let outcome = outcome?;
                            println!("PASS seed {seed} in {:.1?} ({} acked)", started.elapsed(), outcome.acked);
                            let verdict = serde_json::json!({
                                "kind": "swarm", "seed": seed, "passed": true, "acked": outcome.acked,
                                "took_s": started.elapsed().as_secs_f64(),
                            });
                            append_json(report.as_deref(), &verdict)?;
                            rows.push(SwarmRow {
                                seed,
                                passed: true,
                                acked: Some(outcome.acked),
                                faults: search::plan_sized(seed, size).faults.len(),
                                recoveries: outcome.recoveries.clone(),
                                took: started.elapsed(),
                                note: swarm_replay(seed, cluster),
                            });
                        }
                        Err(failure) => {
                            failed += 1;
                            let file = format!("fixtures/real-regressions/seed-{seed}.plan");
                            std::fs::create_dir_all("fixtures/real-regressions")?;
                            std::fs::write(&file, failure.plan.to_string()).with_context(|| format!("write {file}"))?;
                            println!(
                                "FAIL seed {seed}: {}\nshrunk plan ({} faults; k={k} of n={n}, {:.0?}), written to {file}:\n{}replay: cargo run -p sse-chaos -- replay --plan {file} --seed {seed}",
                                failure.failures.join("\n  "),
                                failure.plan.faults.len(),
                                started.elapsed(),
                                failure.plan
                            );
                            let verdict = serde_json::json!({
                                "kind": "swarm", "seed": seed, "passed": false, "failures": failure.failures,
                                "shrunk_plan": failure.plan.to_string(), "shrunk_faults": failure.plan.faults.len(),
                                "took_s": started.elapsed().as_secs_f64(),
                            });
                            append_json(report.as_deref(), &verdict)?;
                            rows.push(SwarmRow {
                                seed,
                                passed: false,
                                faults: search::plan_sized(seed, size).faults.len(),
                                took: started.elapsed(),
                                note: format!(
                                    "{} (shrunk to {} faults; replay: cargo run --release -p sse-chaos -- replay --plan {file} --seed {seed})",
                                    failure.failures.first().map_or("", String::as_str),
                                    failure.plan.faults.len()
                                ),
                                ..SwarmRow::default()
                            });
                        }
                    }
                }
                let kind = if cluster { "cluster swarm" } else { "swarm" };
                let title = format!("real {kind}, seeds {from}..{}", from + seeds);
                write_html(report_html.as_deref(), || sse_report::swarm::report(&title, &rows))?;
                println!("{} passed, {failed} failed", seeds - failed);
                if failed > 0 {
                    anyhow::bail!("{failed} seeds failed");
                }
            }
            Command::Soak { duration, seed, clients, report, report_html } => {
                let soak = soak::run(seed, duration, clients).await?;
                print!("{soak}");
                let json: serde_json::Value = serde_json::from_str(&soak.to_json())?;
                append_json(report.as_deref(), &json)?;
                let repeat = format!(
                    "cargo run --release -p sse-chaos -- soak --duration {} --seed {seed} --clients {clients}",
                    humantime::format_duration(duration)
                );
                write_html(report_html.as_deref(), || soak.html(&repeat))?;
                if !soak.passed() {
                    anyhow::bail!("the soak failed; repeat: {repeat}");
                }
            }
            Command::ClusterIdle { nodes, streams, hold, heartbeat, rate } => {
                cluster_idle::run(cluster_idle::Plan { nodes: nodes.max(1), streams, hold, heartbeat, rate }).await?
            }
            Command::Screenshots { out, report } => {
                std::fs::create_dir_all(&out)?;
                sse_chaos::browser::pages::screenshots(out.as_ref(), report.as_deref().map(AsRef::as_ref)).await?;
                println!("wrote {out}/console.png{}", if report.is_some() { " and report.png" } else { "" });
            }
            Command::Hold { addr, streams, hold } => cluster_idle::hold(addr, streams, hold).await?,
            Command::Failover { rounds, subscribers, rate } => {
                failover_bench::run(failover_bench::Plan { rounds, subscribers, rate: rate.max(1) }).await?
            }
            Command::History { addr, topic, events, size } => resume_bench::history(addr, &topic, events, size).await?,
            Command::Resume { addr, server_pid, topic, from, clients, events, timeout } => {
                resume_bench::run(resume_bench::Plan { addr, server_pid, topic, from, clients, events, timeout })
                    .await?
            }
        }
        Ok(())
    })
}

/// Writes the HTML report `report` makes to `path`, if given.
fn write_html(path: Option<&str>, report: impl FnOnce() -> sse_report::Report) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, report().to_html()).with_context(|| format!("write {path}"))?;
        println!("HTML report: {path}");
    }
    Ok(())
}

/// How to replay one swarm seed.
fn swarm_replay(seed: u64, cluster: bool) -> String {
    let cluster = if cluster { " --cluster" } else { "" };
    format!("cargo run --release -p sse-chaos -- swarm{cluster} --seeds 1 --from {seed}")
}

/// Appends `value` as one JSON line to `path`, if given.
fn append_json(path: Option<&str>, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(path) = path {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(file, "{value}")?;
    }
    Ok(())
}

fn print_outcome(outcome: &plan_run::RealOutcome) {
    for line in &outcome.trace {
        println!("{line}");
    }
    let mut recoveries = outcome.recoveries.clone();
    recoveries.sort();
    let (median, max) = (recoveries.get(recoveries.len() / 2), recoveries.last());
    println!(
        "{} events acknowledged in {:.1?}; recovery after the last heal over {} clients: median {median:?}, max {max:?}",
        outcome.acked,
        outcome.took,
        recoveries.len()
    );
    if outcome.passed() {
        println!("PASS");
    }
    for failure in &outcome.failures {
        println!("FAIL {failure}");
    }
}
