//! Idle streams: open N streams that receive nothing, then compare the server's RSS
//! with its RSS before they were opened. Over cleartext, or over TLS (`--tls-ca`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;

use crate::load::proc_stats;
use crate::load::publisher;
use crate::load::stream_client;
use crate::load::tls_client::TlsConnect;

/// Connections being opened at once.
const OPEN_CONCURRENCY: usize = 256;

/// An open stream, held and never read.
type Held = Box<dyn Send>;

/// Opens `n` idle streams (over TLS when `tls` is given) and prints RSS growth per
/// stream.
pub async fn run(addr: SocketAddr, server_pid: u32, n: usize, tls: Option<TlsConnect>) -> anyhow::Result<()> {
    // Warm up: the first streams pay for one-time allocations (runtime, topic, buffers).
    let warm = open_many(addr, 200, &tls).await?;
    drop(warm);
    wait_for(addr, 0, &tls).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proc_stats::rss_bytes(server_pid)?;
    let streams = open_many(addr, n, &tls).await?;
    wait_for(addr, n, &tls).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc_stats::rss_bytes(server_pid)?;
    let per_stream = (after.saturating_sub(before)) as f64 / n as f64;
    println!("streams={n} rss_before_kib={} rss_after_kib={}", before / 1024, after / 1024);
    let kind = if tls.is_some() { "tls" } else { "cleartext" };
    println!("RESULT idle_streams={n} transport={kind} rss_per_stream_bytes={per_stream:.0}");
    drop(streams);
    wait_for(addr, 0, &tls).await?;
    let released = proc_stats::rss_bytes(server_pid)?;
    println!("after closing: streams=0 rss_kib={}", released / 1024);
    Ok(())
}

async fn open_many(addr: SocketAddr, n: usize, tls: &Option<TlsConnect>) -> anyhow::Result<Vec<Held>> {
    let mut open = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    for _ in 0..n {
        if pending.len() >= OPEN_CONCURRENCY {
            open.push(pending.join_next().await.context("a task")???);
        }
        let tls = tls.clone();
        pending.spawn(async move {
            Ok::<Held, anyhow::Error>(match tls {
                None => Box::new(stream_client::open(addr, "idle").await?),
                Some(tls) => Box::new(stream_client::open_over(tls.connect(addr).await?, addr, "idle").await?),
            })
        });
    }
    while let Some(stream) = pending.join_next().await {
        open.push(stream??);
    }
    Ok(open)
}

/// Polls `/metrics` until `sse_streams` equals `n` (at most 60 s).
pub async fn wait_for_streams(addr: SocketAddr, n: usize, tls: &Option<TlsConnect>) -> anyhow::Result<()> {
    wait_for(addr, n, tls).await
}

async fn wait_for(addr: SocketAddr, n: usize, tls: &Option<TlsConnect>) -> anyhow::Result<()> {
    for _ in 0..600 {
        let streams = match tls {
            None => publisher::metric(addr, "sse_streams").await?,
            Some(tls) => publisher::metric_over(tls.connect(addr).await?, "sse_streams").await?,
        };
        if streams as usize == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("sse_streams never reached {n}")
}
