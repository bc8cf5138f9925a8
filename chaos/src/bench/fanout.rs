//! Fan-out: subscribers on one topic and a publisher at a fixed rate. Reports
//! deliveries per server CPU-second (from the server's own counter and /proc) and
//! delivery latency percentiles, and checks every subscriber got every event in order.
//! Over cleartext, or with every connection over TLS (`--tls-ca`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bench::idle::wait_for_streams;
use crate::load::proc_stats;
use crate::load::publisher::{metric, metric_over, Publisher};
use crate::load::stats::percentile_ms;
use crate::load::stream_client::{self, DataLines};
use crate::load::tls_client::TlsConnect;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub server_pid: u32,
    pub subscribers: usize,
    pub rate: u32,
    pub size: usize,
    pub duration: Duration,
    /// Over TLS, trusting the CA this connector trusts.
    pub tls: Option<TlsConnect>,
}

/// One subscriber's observations.
struct Received {
    latencies_us: Vec<u32>,
    out_of_order: usize,
}

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let topic = "fanout";
    let events = (plan.rate as f64 * plan.duration.as_secs_f64()) as u64;
    let origin = Instant::now();
    let mut readers = JoinSet::new();
    for _ in 0..plan.subscribers {
        match &plan.tls {
            None => readers.spawn(read_events(stream_client::open(plan.addr, topic).await?, events, origin)),
            Some(tls) => {
                let stream = stream_client::open_over(tls.connect(plan.addr).await?, plan.addr, topic).await?;
                readers.spawn(read_events(stream, events, origin))
            }
        };
    }
    wait_for_streams(plan.addr, plan.subscribers, &plan.tls).await?;
    let mut publisher = match &plan.tls {
        None => Publisher::connect(plan.addr, topic).await?,
        Some(tls) => Publisher::connect_over(tls.connect(plan.addr).await?, topic).await?,
    };
    let delivered = || async {
        match &plan.tls {
            None => metric(plan.addr, "sse_events_delivered_total").await,
            Some(tls) => metric_over(tls.connect(plan.addr).await?, "sse_events_delivered_total").await,
        }
    };
    let delivered_before = delivered().await?;
    let cpu_before = proc_stats::cpu_time(plan.server_pid)?;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / plan.rate);
    for seq in 0..events {
        ticker.tick().await;
        let stamp = origin.elapsed().as_micros() as u64;
        let mut body = format!("{seq} {stamp} ");
        body.extend(std::iter::repeat_n('x', plan.size.saturating_sub(body.len())));
        publisher.publish(Bytes::from(body)).await?;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let mut all = Vec::with_capacity(events as usize * plan.subscribers);
    let mut incomplete = 0;
    let mut out_of_order = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(joined) =
        tokio::time::timeout_at(deadline, readers.join_next()).await.context("readers did not finish")?
    {
        let received = joined??;
        if received.latencies_us.len() as u64 != events {
            incomplete += 1;
        }
        out_of_order += received.out_of_order;
        all.extend(received.latencies_us);
    }
    let cpu = proc_stats::cpu_time(plan.server_pid)?.saturating_sub(cpu_before).as_secs_f64();
    let delivered = delivered().await? - delivered_before;
    all.sort_unstable();
    let pct = |p: f64| percentile_ms(&all, p);
    println!(
        "subscribers={} events={events} publish_rate={:.0}/s server_cpu_s={cpu:.2} delivered={delivered}",
        plan.subscribers,
        events as f64 / publish_secs
    );
    println!(
        "RESULT deliveries_per_cpu_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} incomplete_subscribers={incomplete} out_of_order={out_of_order}",
        delivered / cpu.max(0.01),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    if incomplete > 0 || out_of_order > 0 {
        bail!("{incomplete} subscribers missed events, {out_of_order} out of order");
    }
    Ok(())
}

async fn read_events<S: AsyncRead + Unpin>(mut stream: S, expected: u64, origin: Instant) -> anyhow::Result<Received> {
    let mut lines = DataLines::default();
    let mut received = Received { latencies_us: Vec::with_capacity(expected as usize), out_of_order: 0 };
    let mut next_seq = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    while (received.latencies_us.len() as u64) < expected {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("stream closed after {} events", received.latencies_us.len());
        }
        let now = origin.elapsed().as_micros() as u64;
        lines.feed(&buf[..n], |data| {
            let mut fields = data.split(|&b| b == b' ');
            let seq = parse(fields.next());
            let stamp = parse(fields.next());
            if seq != next_seq {
                received.out_of_order += 1;
            }
            next_seq = seq + 1;
            received.latencies_us.push(now.saturating_sub(stamp) as u32);
        });
    }
    Ok(received)
}

fn parse(field: Option<&[u8]>) -> u64 {
    field.and_then(|f| std::str::from_utf8(f).ok()).and_then(|f| f.parse().ok()).unwrap_or(u64::MAX)
}
