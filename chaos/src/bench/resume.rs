//! `history` and `resume`: a reconnect herd. `history` publishes a topic's events and
//! prints the id before the first; after a restart, `resume` opens many streams that all
//! resume from that id and times how long until every one has every event.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use sse_server::stream::id::EventId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::load::proc_stats;
use crate::load::publisher::Publisher;
use crate::load::stream_client::DataLines;

/// Publishes `events` events of `size` bytes to `topic` and prints `RESUME_FROM=<id>`,
/// the id just before the first of them.
pub async fn history(addr: SocketAddr, topic: &str, events: usize, size: usize) -> anyhow::Result<()> {
    let mut publisher = Publisher::connect(addr, topic).await?;
    let body = Bytes::from(vec![b'h'; size]);
    let first = publisher.publish_for_id(body.clone()).await?;
    for _ in 1..events {
        publisher.publish(body.clone()).await?;
    }
    let first = EventId::parse(&first).context("an id is <epoch>-<seq>")?;
    println!("RESUME_FROM={}", EventId { seq: first.seq - 1, ..first });
    Ok(())
}

/// What to run.
#[derive(Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub server_pid: u32,
    pub topic: String,
    pub from: String,
    pub clients: usize,
    pub events: usize,
    pub timeout: Duration,
}

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let rss_before = proc_stats::rss_bytes(plan.server_pid)?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.clients {
        let (addr, topic, from, events) = (plan.addr, plan.topic.clone(), plan.from.clone(), plan.events);
        tasks.spawn(async move { resume_one(addr, &topic, &from, events).await });
    }
    let mut peak_rss = rss_before;
    let mut done = 0;
    let deadline = started + plan.timeout;
    while done < plan.clients {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(joined)) => {
                joined??;
                done += 1;
                if done % 500 == 0 {
                    peak_rss = peak_rss.max(proc_stats::rss_bytes(plan.server_pid)?);
                }
            }
            Ok(None) => break,
            Err(_) => bail!("only {done} of {} clients got every event within {:?}", plan.clients, plan.timeout),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RESULT clients={} events_per_client={} seconds={secs:.2} events_per_s={:.0} server_rss_growth_mib={:.1}",
        plan.clients,
        plan.events,
        (plan.clients * plan.events) as f64 / secs,
        peak_rss.saturating_sub(rss_before) as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Opens one stream resuming from `from` and reads until `events` events arrived.
async fn resume_one(addr: SocketAddr, topic: &str, from: &str, events: usize) -> anyhow::Result<()> {
    let mut tcp = TcpStream::connect(addr).await.context("connect")?;
    let request = format!("GET /events?topic={topic} HTTP/1.1\r\nhost: {addr}\r\nlast-event-id: {from}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut lines = DataLines::default();
    let mut buf = vec![0u8; 16 << 10];
    let mut seen = 0;
    while seen < events {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            bail!("the stream closed after {seen} of {events} events");
        }
        lines.feed(&buf[..n], |_| seen += 1);
    }
    Ok(())
}
