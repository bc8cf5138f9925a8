//! Idle streams: open N streams that receive nothing, then compare the server's RSS
//! with its RSS before they were opened.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::proc_stats;
use crate::stream_client;

/// Connections being opened at once.
const OPEN_CONCURRENCY: usize = 256;

/// Opens `n` idle streams and prints RSS growth per stream.
pub async fn run(addr: SocketAddr, server_pid: u32, n: usize) -> anyhow::Result<()> {
    // Warm up: the first streams pay for one-time allocations (runtime, topic, buffers).
    let warm = open_many(addr, 200).await?;
    drop(warm);
    wait_for_streams(addr, 0).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proc_stats::rss_bytes(server_pid)?;
    let streams = open_many(addr, n).await?;
    wait_for_streams(addr, n).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc_stats::rss_bytes(server_pid)?;
    let per_stream = (after.saturating_sub(before)) as f64 / n as f64;
    println!("streams={n} rss_before_kib={} rss_after_kib={}", before / 1024, after / 1024);
    println!("RESULT idle_streams={n} rss_per_stream_bytes={per_stream:.0}");
    drop(streams);
    wait_for_streams(addr, 0).await?;
    let released = proc_stats::rss_bytes(server_pid)?;
    println!("after closing: streams=0 rss_kib={}", released / 1024);
    Ok(())
}

async fn open_many(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut open = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    for _ in 0..n {
        if pending.len() >= OPEN_CONCURRENCY {
            open.push(pending.join_next().await.context("a task")???);
        }
        pending.spawn(stream_client::open(addr, "idle"));
    }
    while let Some(stream) = pending.join_next().await {
        open.push(stream??);
    }
    Ok(open)
}

/// Polls `/metrics` until `sse_streams` equals `n` (at most 60 s).
pub async fn wait_for_streams(addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    for _ in 0..600 {
        if crate::publisher::metric(addr, "sse_streams").await? as usize == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("sse_streams never reached {n}")
}
