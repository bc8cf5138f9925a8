//! `cluster-idle`: many streams across several `sse-server` processes in cluster mode,
//! held with heartbeats. A 3-node NATS cluster, N nodes on ports of their own, and one
//! holder process per node (each process may hold 20,000 descriptors here, so one client
//! process cannot hold 100,000 streams either): every holder opens its share of streams,
//! reads them for the hold, and reports. The servers' RSS growth is summed over the nodes
//! and divided by the streams. With `--rate`, one publisher posts to the first node that
//! many events per second during the hold, each carrying its send time: the holders
//! report how many each stream got, in order, and the delivery latency, and the servers'
//! CPU time gives deliveries per CPU-second.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::load::{proc_stats, publisher, stream_client};
use crate::real::nats::NatsCluster;
use crate::real::processes::ServerProcess;

/// What to run.
#[derive(Debug)]
pub struct Plan {
    pub nodes: usize,
    pub streams: usize,
    pub hold: Duration,
    pub heartbeat: Duration,
    /// Events per second published during the hold (0: idle streams).
    pub rate: u64,
}

/// Connections a holder opens at once.
const OPEN_CONCURRENCY: usize = 256;

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let nats = NatsCluster::start(3).await?;
    let data = tempfile::tempdir()?;
    let heartbeat = format!("{}ms", plan.heartbeat.as_millis());
    let mut nodes = Vec::new();
    for n in 0..plan.nodes {
        let args: Vec<String> =
            ["--store", "nats", "--nats-stream", "IDLE", "--nats-url", &nats.urls(), "--heartbeat", &heartbeat]
                .map(str::to_owned)
                .to_vec();
        nodes.push(ServerProcess::start(&data.path().join(format!("node{n}")), &args, None).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: u64 = nodes.iter().map(|n| proc_stats::rss_bytes(n.pid())).sum::<anyhow::Result<u64>>()?;
    let exe = std::env::current_exe()?;
    let mut holders = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let share = plan.streams / plan.nodes + usize::from(n < plan.streams % plan.nodes);
        let child = tokio::process::Command::new(&exe)
            .args(["hold", "--addr", &node.addr.to_string(), "--streams", &share.to_string()])
            .args(["--hold", &format!("{}ms", plan.hold.as_millis())])
            .stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start a holder")?;
        holders.push((share, child));
    }
    let mut lines = Vec::new();
    for (_, child) in &mut holders {
        lines.push(BufReader::new(child.stdout.take().context("a holder's stdout")?).lines());
    }
    for (n, lines) in lines.iter_mut().enumerate() {
        let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line()).await??;
        if !line.as_deref().is_some_and(|l| l.starts_with("OPEN")) {
            bail!("holder {n} did not open its streams: {line:?}");
        }
    }
    // Every holder starts its hold now, together.
    for (_, child) in &mut holders {
        let mut stdin = child.stdin.take().context("a holder's stdin")?;
        stdin.write_all(b"GO\n").await?;
    }
    let opened = Instant::now();
    let cpu_before: Duration = nodes.iter().map(|n| proc_stats::cpu_time(n.pid())).sum::<anyhow::Result<Duration>>()?;
    let publisher = (plan.rate > 0).then(|| {
        let (addr, every, until) = (nodes[0].addr, Duration::from_secs(1) / plan.rate as u32, opened + plan.hold);
        tokio::spawn(async move {
            let mut publisher = publisher::Publisher::connect(addr, "idle").await?;
            let mut tick = tokio::time::interval(every);
            let mut sent = 0u64;
            // Stop a few heartbeats before the holders do, so every event can arrive.
            while Instant::now() + Duration::from_secs(3) < until {
                tick.tick().await;
                let event = bytes::Bytes::from(format!("t={}", unix_micros()));
                tokio::time::timeout(Duration::from_secs(5), publisher.publish(event))
                    .await
                    .context("a publish hung")??;
                sent += 1;
            }
            anyhow::Ok(sent)
        })
    });
    let mut open = 0.0;
    for node in &nodes {
        open += publisher::metric(node.addr, "sse_streams").await?;
    }
    // RSS near the end of the hold, so what the hold itself grew is counted.
    tokio::time::sleep_until(opened + plan.hold.saturating_sub(Duration::from_secs(2))).await;
    let after: u64 = nodes.iter().map(|n| proc_stats::rss_bytes(n.pid())).sum::<anyhow::Result<u64>>()?;
    println!("streams open on the servers: {open}; summed RSS before {} MiB, after {} MiB", before >> 20, after >> 20);
    let mut held = 0usize;
    let mut fewest_heartbeats = u64::MAX;
    let (mut fewest_events, mut p50s, mut p99s, mut maxes) = (u64::MAX, Vec::new(), Vec::new(), Vec::new());
    let mut out_of_order = 0u64;
    for (n, lines) in lines.iter_mut().enumerate() {
        let line = tokio::time::timeout(plan.hold + Duration::from_secs(60), lines.next_line()).await??;
        let line = line.with_context(|| format!("holder {n} ended without a report"))?;
        println!("holder {n}: {line}");
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        held += field("held").unwrap_or(0) as usize;
        fewest_heartbeats = fewest_heartbeats.min(field("fewest_heartbeats").unwrap_or(0));
        fewest_events = fewest_events.min(field("fewest_events").unwrap_or(0));
        out_of_order += field("out_of_order").unwrap_or(0);
        p50s.push(field("p50_us").unwrap_or(0));
        p99s.push(field("p99_us").unwrap_or(0));
        maxes.push(field("max_us").unwrap_or(0));
    }
    let cpu: Duration = nodes.iter().map(|n| proc_stats::cpu_time(n.pid())).sum::<anyhow::Result<Duration>>()?;
    let cpu = cpu.saturating_sub(cpu_before);
    if let Some(publisher) = publisher {
        let sent = publisher.await??;
        let deliveries = sent * plan.streams as u64;
        // The holders' percentiles are per process; the worst is quoted.
        let worst = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
        println!(
            "RESULT fanout nodes={} streams={} rate={} sent={sent} fewest_events={fewest_events} out_of_order={out_of_order} latency_p50_ms={:.0} latency_p99_ms={:.0} latency_max_ms={:.0} deliveries={deliveries} server_cpu_s={:.1} deliveries_per_cpu_s={:.0}",
            plan.nodes,
            plan.streams,
            plan.rate,
            worst(&p50s),
            worst(&p99s),
            worst(&maxes),
            cpu.as_secs_f64(),
            deliveries as f64 / cpu.as_secs_f64().max(1e-9)
        );
        if fewest_events < sent || out_of_order > 0 {
            bail!("a stream missed events or got them out of order ({fewest_events} of {sent}, {out_of_order} out of order)");
        }
    }
    let per_stream = after.saturating_sub(before) as f64 / plan.streams as f64;
    println!(
        "RESULT nodes={} streams={} open={open} held_for_s={:.0} held={held} fewest_heartbeats={fewest_heartbeats} summed_rss_per_stream_bytes={per_stream:.0}",
        plan.nodes,
        plan.streams,
        opened.elapsed().as_secs_f64()
    );
    if held != plan.streams {
        bail!("{held} of {} streams lived through the hold", plan.streams);
    }
    // Held with heartbeats: every stream got one per interval, less one for the phase
    // (idle streams only: a stream that gets events needs none).
    let owed = (plan.hold.as_millis() / plan.heartbeat.as_millis().max(1)) as u64;
    if plan.rate == 0 && fewest_heartbeats + 1 < owed {
        bail!("a stream got {fewest_heartbeats} heartbeats in {:?}, owed {}", plan.hold, owed - 1);
    }
    Ok(())
}

/// The holder: opens `streams` streams to `addr`, prints `OPEN`, reads their heartbeats
/// for `hold`, then prints how many lived through it and the fewest heartbeats one got.
pub async fn hold(addr: std::net::SocketAddr, streams: usize, hold: Duration) -> anyhow::Result<()> {
    let mut opening = JoinSet::new();
    let mut open = Vec::with_capacity(streams);
    for _ in 0..streams {
        if opening.len() >= OPEN_CONCURRENCY {
            open.push(opening.join_next().await.context("a task")???);
        }
        opening.spawn(async move { stream_client::open(addr, "idle").await });
    }
    while let Some(stream) = opening.join_next().await {
        open.push(stream??);
    }
    println!("OPEN {}", open.len());
    // The hold starts when the bench says so, for every holder at once.
    let mut go = String::new();
    tokio::io::BufReader::new(tokio::io::stdin()).read_line(&mut go).await?;
    let until = Instant::now() + hold;
    let alive = Arc::new(AtomicUsize::new(0));
    let mut readers = JoinSet::new();
    for mut tcp in open {
        let alive = alive.clone();
        readers.spawn(async move {
            let mut seen = Seen::default();
            let mut lines = stream_client::DataLines::default();
            let mut buf = [0u8; 4096];
            loop {
                match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
                    Err(_) => {
                        alive.fetch_add(1, Ordering::Relaxed);
                        return seen;
                    }
                    Ok(Ok(0) | Err(_)) => return seen,
                    Ok(Ok(n)) => {
                        seen.beats += buf[..n].windows(3).filter(|w| w == b":\n\n").count() as u64;
                        lines.feed(&buf[..n], |data| seen.event(data));
                    }
                }
            }
        });
    }
    let (mut fewest_beats, mut fewest_events, mut out_of_order) = (u64::MAX, u64::MAX, 0);
    let mut latencies = Vec::new();
    while let Some(seen) = readers.join_next().await {
        let seen = seen?;
        fewest_beats = fewest_beats.min(seen.beats);
        fewest_events = fewest_events.min(seen.events);
        out_of_order += seen.out_of_order;
        latencies.extend(seen.latencies_us);
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0);
    println!(
        "held={} fewest_heartbeats={fewest_beats} fewest_events={fewest_events} out_of_order={out_of_order} p50_us={} p99_us={} max_us={}",
        alive.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

/// What one held stream saw.
#[derive(Default)]
struct Seen {
    beats: u64,
    events: u64,
    /// Events whose send time was before the previous one's.
    out_of_order: u64,
    last_sent: u64,
    latencies_us: Vec<u64>,
}

impl Seen {
    fn event(&mut self, data: &[u8]) {
        let Some(sent) = std::str::from_utf8(data).ok().and_then(|d| d.strip_prefix("t=")?.parse::<u64>().ok()) else {
            return;
        };
        self.events += 1;
        if sent < self.last_sent {
            self.out_of_order += 1;
        }
        self.last_sent = sent;
        self.latencies_us.push(unix_micros().saturating_sub(sent));
    }
}

/// Wall-clock microseconds: the publisher and the holders run on one machine.
fn unix_micros() -> u64 {
    #[allow(clippy::disallowed_types)] // a benchmark across processes, never in a simulation
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
