//! `cluster-idle`: many idle streams across several `sse-server` processes in cluster
//! mode, held with heartbeats. A 3-node NATS cluster, N nodes on ports of their own, and
//! one holder process per node (each process may hold 20,000 descriptors here, so one
//! client process cannot hold 100,000 streams either): every holder opens its share of
//! streams, reads their heartbeats for the hold, and reports. The servers' RSS growth is
//! summed over the nodes and divided by the streams.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
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
    let opened = Instant::now();
    let mut open = 0.0;
    for node in &nodes {
        open += publisher::metric(node.addr, "sse_streams").await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: u64 = nodes.iter().map(|n| proc_stats::rss_bytes(n.pid())).sum::<anyhow::Result<u64>>()?;
    println!("streams open on the servers: {open}; summed RSS before {} MiB, after {} MiB", before >> 20, after >> 20);
    let mut held = 0usize;
    let mut fewest_heartbeats = u64::MAX;
    for (n, lines) in lines.iter_mut().enumerate() {
        let line = tokio::time::timeout(plan.hold + Duration::from_secs(60), lines.next_line()).await??;
        let line = line.with_context(|| format!("holder {n} ended without a report"))?;
        println!("holder {n}: {line}");
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        held += field("held").unwrap_or(0) as usize;
        fewest_heartbeats = fewest_heartbeats.min(field("fewest_heartbeats").unwrap_or(0));
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
    let until = Instant::now() + hold;
    let alive = Arc::new(AtomicUsize::new(0));
    let mut readers = JoinSet::new();
    for mut tcp in open {
        let alive = alive.clone();
        readers.spawn(async move {
            let mut beats = 0u64;
            let mut buf = [0u8; 256];
            loop {
                match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
                    Err(_) => {
                        alive.fetch_add(1, Ordering::Relaxed);
                        return beats;
                    }
                    Ok(Ok(0) | Err(_)) => return beats,
                    Ok(Ok(n)) => beats += buf[..n].windows(3).filter(|w| w == b":\n\n").count() as u64,
                }
            }
        });
    }
    let mut fewest = u64::MAX;
    while let Some(beats) = readers.join_next().await {
        fewest = fewest.min(beats?);
    }
    println!("held={} fewest_heartbeats={fewest}", alive.load(Ordering::Relaxed));
    Ok(())
}
