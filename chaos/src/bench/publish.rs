//! `publish`: acknowledged publishes per second and publish latency, from N concurrent
//! kept-alive publishers, each publishing back to back for a fixed time.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::load::publisher::Publisher;
use crate::load::stats::percentile_ms;

/// What to run.
#[derive(Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub publishers: usize,
    pub size: usize,
    pub duration: Duration,
}

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let body = Bytes::from(vec![b'p'; plan.size]);
    let started = Instant::now();
    let until = started + plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..plan.publishers {
        let (addr, body) = (plan.addr, body.clone());
        tasks.spawn(async move {
            let mut publisher = Publisher::connect(addr, &format!("bench{}", p % 16)).await?;
            let mut latencies_us = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                publisher.publish(body.clone()).await?;
                latencies_us.push(sent.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies_us)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| percentile_ms(&all, p);
    println!(
        "RESULT publishers={} acked={} publishes_per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        plan.publishers,
        all.len(),
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
