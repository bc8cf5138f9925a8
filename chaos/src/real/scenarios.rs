//! Real chaos scenarios: the production `sse-server` binary as a child process on its own
//! port and data directory, subscribers reaching it through a real Toxiproxy proxy, a
//! publisher talking to it directly, a fault applied and read back, then the oracle: every
//! acknowledged event reaches every subscriber exactly once, in id order, with no reset,
//! within a bound; and after the subscribers leave, streams, connections and file
//! descriptors are back to their baseline (read from `/metrics` and `/proc/PID/fd`).

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use nix::sys::signal::Signal;
use sse_server::stream::id::EventId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cgroup::MemoryCgroup;
use super::processes::{ServerProcess, ToxiproxyServer};
use super::subscriber::{self, Shared};
use super::toxiproxy::{Direction, Toxic};
use crate::load::publisher::{metric, metric_labelled, Publisher};
use crate::load::stats::percentile;

/// Every scenario, in the order `run all` takes them.
pub const SCENARIOS: [&str; 14] = [
    "latency",
    "slicer",
    "bandwidth",
    "slow_close",
    "reset_peer",
    "storm",
    "limit_data",
    "blackhole",
    "stalled_reader",
    "fd_exhaustion",
    "memory_pressure",
    "sigstop",
    "sigterm",
    "sigkill",
];

/// Server timing for real runs: short enough to observe, long enough for a loaded box.
const HEARTBEAT: Duration = Duration::from_millis(300);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
const TOPIC: &str = "chaos";
const PROXY: &str = "sse";

/// How big a run is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seeds Toxiproxy's randomness and this run's own choices.
    pub seed: u64,
    pub clients: usize,
    /// Events published (split before and after the fault).
    pub events: usize,
    /// Pause between publishes.
    pub every: Duration,
}

impl Settings {
    /// The short setting `cargo test` uses.
    pub fn short(seed: u64) -> Settings {
        Settings { seed, clients: 8, events: 60, every: Duration::from_millis(10) }
    }
}

/// What a scenario found.
#[derive(Debug)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        if ok {
            self.notes.push(format!("ok: {what}"));
        } else {
            self.failures.push(what);
        }
    }

    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as one JSON object (for the nightly report).
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "scenario": self.scenario,
            "seed": self.seed,
            "passed": self.passed(),
            "checks": self.notes,
            "failures": self.failures,
        })
        .to_string()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        writeln!(f, "{verdict} {} (seed {})", self.scenario, self.seed)?;
        for note in &self.notes {
            writeln!(f, "  {note}")?;
        }
        for failure in &self.failures {
            writeln!(f, "  FAILED: {failure}")?;
        }
        Ok(())
    }
}

/// An acknowledged publish.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    data: String,
    at: Instant,
}

/// Toxiproxy, the server, the proxy and the subscribers of one scenario.
struct Rig {
    toxiproxy: ToxiproxyServer,
    server: ServerProcess,
    _data: tempfile::TempDir,
    subscribers: Vec<(Shared, JoinHandle<()>)>,
    stop: watch::Sender<bool>,
    baseline_fds: usize,
    baseline_rss: u64,
}

impl Rig {
    async fn start(settings: &Settings, nofile: Option<u64>, extra: &[&str]) -> anyhow::Result<Rig> {
        let toxiproxy = ToxiproxyServer::start(settings.seed).await?;
        let data = tempfile::tempdir()?;
        let flags = [
            ("--heartbeat", format!("{}ms", HEARTBEAT.as_millis())),
            ("--write-timeout", format!("{}ms", WRITE_TIMEOUT.as_millis())),
            ("--drain-timeout", format!("{}ms", DRAIN_TIMEOUT.as_millis())),
            ("--retry", "200ms".to_owned()),
            ("--retry-jitter", "300ms".to_owned()),
            ("--seed", settings.seed.to_string()),
        ];
        let mut args: Vec<String> = flags.into_iter().flat_map(|(k, v)| [k.to_owned(), v]).collect();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let server = ServerProcess::start(&data.path().join("data"), &args, nofile).await?;
        let baseline_fds = server.open_fds()?;
        let baseline_rss = crate::load::proc_stats::rss_bytes(server.pid())?;
        let proxy = toxiproxy.client.create_proxy(PROXY, server.addr).await?;
        let (stop, stopped) = watch::channel(false);
        let subscribers = (0..settings.clients)
            .map(|_| {
                let record = Shared::default();
                let task = tokio::spawn(subscriber::run(
                    proxy,
                    vec![TOPIC.into()],
                    HEARTBEAT,
                    record.clone(),
                    stopped.clone(),
                ));
                (record, task)
            })
            .collect();
        let rig = Rig { toxiproxy, server, _data: data, subscribers, stop, baseline_fds, baseline_rss };
        rig.wait_streams(settings.clients, Duration::from_secs(10)).await?;
        Ok(rig)
    }

    async fn wait_streams(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let streams = metric(self.server.addr, "sse_streams").await.unwrap_or(-1.0);
            if streams == n as f64 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{streams} streams open after {within:?}, expected {n}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes `n` events directly to the server (not through the proxy).
    async fn publish(&self, n: usize, tag: &str, every: Duration) -> anyhow::Result<Vec<Acked>> {
        let mut publisher = Publisher::connect(self.server.addr, TOPIC).await?;
        let mut acked = Vec::with_capacity(n);
        for i in 0..n {
            let data = format!("{tag}-{i}");
            let id = publisher.publish_for_id(Bytes::from(data.clone())).await?;
            acked.push(Acked { id, data, at: Instant::now() });
            tokio::time::sleep(every).await;
        }
        Ok(acked)
    }

    /// Waits until every subscriber has every acknowledged event (bounded); returns how
    /// long after `from` the last one arrived.
    async fn settle(&self, acked: &[Acked], from: Instant, within: Duration) -> Duration {
        let deadline = Instant::now() + within;
        loop {
            let complete = self.subscribers.iter().all(|(record, _)| {
                let record = record.lock().unwrap();
                acked.iter().all(|a| record.events.iter().any(|e| e.data == a.data))
            });
            if complete || Instant::now() > deadline {
                return Instant::now().saturating_duration_since(from);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The oracle: every acknowledged event once per subscriber, ids increasing, no reset.
    fn judge(&self, acked: &[Acked], report: &mut Report) {
        let mut problems = Vec::new();
        for (n, (record, _)) in self.subscribers.iter().enumerate() {
            let record = record.lock().unwrap();
            for a in acked {
                let copies = record.events.iter().filter(|e| e.data == a.data).count();
                if copies != 1 {
                    problems.push(format!("client {n} got {} {} {copies} times", a.id, a.data));
                }
            }
            let seqs: Vec<u64> = record.events.iter().filter_map(|e| Some(EventId::parse(&e.id)?.seq)).collect();
            if seqs.windows(2).any(|w| w[0] >= w[1]) {
                problems.push(format!("client {n}: ids out of order"));
            }
            if !record.resets.is_empty() {
                problems.push(format!("client {n}: reset notices {:?}", record.resets));
            }
        }
        let first = problems.first().cloned().unwrap_or_default();
        report.check(
            problems.is_empty(),
            format!(
                "{} acknowledged events reached all {} clients once, in order, without a reset{}",
                acked.len(),
                self.subscribers.len(),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!(" ({} problems; first: {first})", problems.len())
                }
            ),
        );
    }

    /// Subscribers leave; streams, connections and fds must return to the baseline.
    async fn leak_check(self, report: &mut Report) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for (_, task) in &self.subscribers {
            task.abort();
        }
        let bound = WRITE_TIMEOUT + Duration::from_secs(2);
        let deadline = Instant::now() + bound;
        let (mut streams, mut connections, mut fds);
        loop {
            streams = metric(self.server.addr, "sse_streams").await?;
            // The scrape itself is one connection.
            connections = metric(self.server.addr, "sse_connections").await? - 1.0;
            fds = self.server.open_fds()?;
            if (streams == 0.0 && connections <= 0.0 && fds <= self.baseline_fds + 1) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        report.check(
            streams == 0.0 && connections <= 0.0 && fds <= self.baseline_fds + 1,
            format!(
                "after clients left (bound {bound:?}): {streams} streams, {connections} connections, {fds} fds (baseline {})",
                self.baseline_fds
            ),
        );
        self.toxiproxy.client.delete_proxy(PROXY).await?;
        Ok(())
    }

    /// Every delivery's delay after its acknowledgement, over all subscribers, sorted.
    fn delays(&self, acked: &[Acked]) -> Vec<Duration> {
        let mut delays = Vec::new();
        for (record, _) in &self.subscribers {
            let record = record.lock().unwrap();
            for a in acked {
                if let Some(e) = record.events.iter().find(|e| e.data == a.data) {
                    delays.push(e.at.saturating_duration_since(a.at));
                }
            }
        }
        delays.sort();
        delays
    }

    fn connects(&self) -> Vec<u32> {
        self.subscribers.iter().map(|(r, _)| r.lock().unwrap().connects).collect()
    }
}

fn connects_summary(rig: &Rig) -> String {
    let connects = rig.connects();
    let (min, max) = (connects.iter().min().copied().unwrap_or(0), connects.iter().max().copied().unwrap_or(0));
    format!("connections per client: {min} to {max}")
}

/// Clients in the disconnect storm, at least.
const STORM_CLIENTS: usize = 1000;

/// Runs one scenario by name.
pub async fn run(name: &str, settings: &Settings) -> anyhow::Result<Report> {
    let mut report = Report { scenario: name.to_owned(), seed: settings.seed, notes: Vec::new(), failures: Vec::new() };
    let storm = Settings { clients: settings.clients.max(STORM_CLIENTS), ..settings.clone() };
    let settings = if name == "storm" { &storm } else { settings };
    let nofile = (name == "fd_exhaustion").then_some(FD_LIMIT);
    let extra: &[&str] = if name == "memory_pressure" { &["--max-buffered-bytes", "67108864"] } else { &[] };
    let rig = Rig::start(settings, nofile, extra).await.with_context(|| format!("setting up {name}"))?;
    let half = settings.events / 2;
    let outcome = match name {
        "latency" => latency(rig, settings, &mut report).await,
        "slicer" => slicer(rig, settings, &mut report).await,
        "bandwidth" => bandwidth(rig, settings, &mut report).await,
        "slow_close" => slow_close(rig, settings, &mut report).await,
        "limit_data" | "reset_peer" | "storm" | "blackhole" => {
            let toxic = match name {
                "limit_data" => Toxic::new("limit_data", Direction::Downstream, &[("bytes", 600)]),
                // The storm: every one of at least a thousand streams reset at once.
                "reset_peer" | "storm" => Toxic::new("reset_peer", Direction::Downstream, &[("timeout", 0)]),
                _ => Toxic::new("timeout", Direction::Downstream, &[("timeout", 0)]),
            };
            cut_and_resume(rig, settings, half, toxic, &mut report).await
        }
        "stalled_reader" => stalled_reader(rig, settings, &mut report).await,
        "fd_exhaustion" => fd_exhaustion(rig, settings, &mut report).await,
        "memory_pressure" => memory_pressure(rig, settings, &mut report).await,
        "sigstop" => sigstop(rig, settings, half, &mut report).await,
        "sigterm" => sigterm(rig, settings, half, &mut report).await,
        "sigkill" => sigkill(rig, settings, half, &mut report).await,
        other => bail!("no scenario {other:?}; scenarios: {}", SCENARIOS.join(", ")),
    };
    // An error in the middle of a scenario (the server died, an API call failed) is a
    // failure of the run, reported with the rest.
    let rig = match outcome {
        Ok(rig) => rig,
        Err(error) => {
            report.failures.push(format!("the scenario stopped: {error:#}"));
            return Ok(report);
        }
    };
    if let Err(error) = rig.leak_check(&mut report).await {
        report.failures.push(format!("the leak check stopped: {error:#}"));
    }
    Ok(report)
}

/// Latency 100 ms ± 50 ms on the way to clients: order and completeness kept, the delay
/// observed.
async fn latency(rig: Rig, settings: &Settings, report: &mut Report) -> anyhow::Result<Rig> {
    let toxic = Toxic::new("latency", Direction::Downstream, &[("latency", 100), ("jitter", 50)]);
    rig.toxiproxy.client.add_toxic(PROXY, &toxic).await?;
    report.check(true, "latency 100 ms ± 50 ms applied downstream (read back from the API)");
    let acked = rig.publish(settings.events, "lat", settings.every).await?;
    let started = acked.first().map_or_else(Instant::now, |a| a.at);
    rig.settle(&acked, started, Duration::from_secs(10)).await;
    rig.toxiproxy.client.remove_toxic(PROXY, &toxic.name).await?;
    rig.judge(&acked, report);
    let delays = rig.delays(&acked);
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    report.check(
        p50 >= Duration::from_millis(50),
        format!("delivery delay p50 {p50:?} p99 {p99:?} (toxic: 100 ms ± 50 ms)"),
    );
    Ok(rig)
}

/// Slicer: the stream arrives in pieces of 1 to 15 bytes, 1 ms apart, so events and
/// chunk framing are split across reads everywhere; everything must still parse.
async fn slicer(rig: Rig, settings: &Settings, report: &mut Report) -> anyhow::Result<Rig> {
    let toxic =
        Toxic::new("slicer", Direction::Downstream, &[("average_size", 8), ("size_variation", 7), ("delay", 1000)]);
    rig.toxiproxy.client.add_toxic(PROXY, &toxic).await?;
    report.check(true, "slicer 8 ± 7 bytes, 1 ms apart, applied downstream (read back from the API)");
    let acked = rig.publish(settings.events, "sliced", settings.every).await?;
    let started = acked.first().map_or_else(Instant::now, |a| a.at);
    let took = rig.settle(&acked, started, Duration::from_secs(20)).await;
    rig.toxiproxy.client.remove_toxic(PROXY, &toxic.name).await?;
    report.check(true, format!("all delivered {took:?} after the first publish"));
    rig.judge(&acked, report);
    Ok(rig)
}

/// A second proxy limited to 4 KB/s carries two extra clients: they fall behind (read
/// back: fewer events than published when the limit is lifted) and catch up from the
/// store after; the other clients' delivery is not dragged down.
async fn bandwidth(mut rig: Rig, settings: &Settings, report: &mut Report) -> anyhow::Result<Rig> {
    let slow_proxy = rig.toxiproxy.client.create_proxy("slow", rig.server.addr).await?;
    let toxic = Toxic::new("bandwidth", Direction::Downstream, &[("rate", 4)]);
    rig.toxiproxy.client.add_toxic("slow", &toxic).await?;
    report.check(true, "bandwidth 4 KB/s applied downstream on a second proxy (read back from the API)");
    let stop = rig.stop.subscribe();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let record = Shared::default();
            let task = tokio::spawn(subscriber::run(
                slow_proxy,
                vec![TOPIC.into()],
                HEARTBEAT * 20,
                record.clone(),
                stop.clone(),
            ));
            (record, task)
        })
        .collect();
    rig.wait_streams(settings.clients + 2, Duration::from_secs(5)).await?;
    let body = "b".repeat(2 << 10);
    let mut publisher = Publisher::connect(rig.server.addr, TOPIC).await?;
    let mut acked = Vec::new();
    for i in 0..settings.events {
        let data = format!("wide-{i}-{body}");
        let id = publisher.publish_for_id(Bytes::from(data.clone())).await?;
        acked.push(Acked { id, data, at: Instant::now() });
        tokio::time::sleep(settings.every).await;
    }
    rig.settle(&acked, acked[0].at, Duration::from_secs(10)).await;
    let delays = rig.delays(&acked);
    let p99 = percentile(&delays, 0.99);
    report.check(p99 < Duration::from_millis(500), format!("fast clients' delivery p99 {p99:?} beside the slow ones"));
    let behind: Vec<usize> = slow.iter().map(|(r, _)| r.lock().unwrap().events.len()).collect();
    report.check(
        behind.iter().all(|n| *n < acked.len()),
        format!("the slow clients were behind when the limit was lifted ({behind:?} of {})", acked.len()),
    );
    rig.toxiproxy.client.remove_toxic("slow", &toxic.name).await?;
    rig.subscribers.extend(slow);
    rig.settle(&acked, Instant::now(), Duration::from_secs(20)).await;
    rig.judge(&acked, report);
    Ok(rig)
}

/// `slow_close`: connections through the proxy close a second late; the server still
/// frees every stream within the leak bound when the clients leave.
async fn slow_close(rig: Rig, settings: &Settings, report: &mut Report) -> anyhow::Result<Rig> {
    let acked = rig.publish(settings.events, "closing", settings.every).await?;
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    rig.judge(&acked, report);
    let toxic = Toxic::new("slow_close", Direction::Downstream, &[("delay", 1000)]);
    rig.toxiproxy.client.add_toxic(PROXY, &toxic).await?;
    report.check(true, "slow_close 1 s applied downstream (read back from the API); the clients leave now");
    Ok(rig)
}

/// Publishes, applies a toxic that cuts every stream (reset_peer) or swallows them
/// (timeout 0: a black hole), or closes it after a few hundred bytes, mid-event
/// (limit_data), waits until every client noticed, removes it, publishes
/// again: everything arrives once, and the server freed the dead streams.
async fn cut_and_resume(
    rig: Rig,
    settings: &Settings,
    half: usize,
    toxic: Toxic,
    report: &mut Report,
) -> anyhow::Result<Rig> {
    let mut acked = rig.publish(half, "before", settings.every).await?;
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    let before: Vec<u32> = rig.connects();
    rig.toxiproxy.client.add_toxic(PROXY, &toxic).await?;
    report.check(true, format!("{} applied {:?} (read back from the API)", toxic.kind, toxic.attributes));
    acked.extend(rig.publish(half / 2, "during", settings.every).await?);
    // Every client must notice (a reset, or three silent heartbeats) and try again.
    let deadline = Instant::now() + HEARTBEAT * 3 + Duration::from_secs(5);
    while rig.connects().iter().zip(&before).any(|(now, then)| now <= then) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reconnected = rig.connects().iter().zip(&before).all(|(now, then)| now > then);
    report.check(reconnected, format!("every client lost its stream and reconnected ({})", connects_summary(&rig)));
    rig.toxiproxy.client.remove_toxic(PROXY, &toxic.name).await?;
    // Recovery: from the fault's removal until every client has everything acknowledged
    // so far; publishing then goes on.
    let healed = Instant::now();
    let recovery = rig.settle(&acked, healed, Duration::from_secs(10)).await;
    let bound = HEARTBEAT * 3 + Duration::from_millis(500) + WRITE_TIMEOUT + Duration::from_secs(1);
    report.check(recovery <= bound, format!("caught up {recovery:?} after the toxic was removed (bound {bound:?})"));
    acked.extend(rig.publish(half - half / 2, "after", settings.every).await?);
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    rig.judge(&acked, report);
    // The streams cut off by the fault are gone: one per client is left.
    match rig.wait_streams(settings.clients, WRITE_TIMEOUT + Duration::from_secs(2)).await {
        Ok(()) => report.check(true, format!("the server holds exactly {} streams again", settings.clients)),
        Err(e) => report.check(false, format!("stale streams were not freed: {e}")),
    }
    Ok(rig)
}

/// A reader that stops reading (a small receive buffer, never read) next to the proxied
/// clients: the server must cut it by its write timeout while the others get everything.
async fn stalled_reader(rig: Rig, settings: &Settings, report: &mut Report) -> anyhow::Result<Rig> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stalled = socket.connect(rig.server.addr).await?;
    tokio::io::AsyncWriteExt::write_all(
        &mut stalled,
        format!("GET /events?topic={TOPIC} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes(),
    )
    .await?;
    rig.wait_streams(settings.clients + 1, Duration::from_secs(5)).await?;
    let series = "sse_disconnects_total{reason=\"write_timeout\"}";
    let before = metric_labelled(rig.server.addr, series).await?;
    let mut publisher = Publisher::connect(rig.server.addr, TOPIC).await?;
    let body = "w".repeat(32 << 10);
    let mut acked = Vec::new();
    let started = Instant::now();
    let bound = WRITE_TIMEOUT * 3 + Duration::from_secs(5);
    while metric_labelled(rig.server.addr, series).await? == before {
        if started.elapsed() > bound || acked.len() >= 20_000 {
            report.check(false, format!("the stalled reader was not cut within {bound:?} ({} events)", acked.len()));
            return Ok(rig);
        }
        let data = format!("big-{}-{body}", acked.len());
        let id = publisher.publish_for_id(Bytes::from(data.clone())).await?;
        acked.push(Acked { id, data, at: Instant::now() });
        tokio::time::sleep(settings.every).await;
    }
    report.check(true, format!("the stalled reader was cut by the write timeout after {:?}", started.elapsed()));
    // Memory stays bounded whatever the stalled reader did: the window's bytes (default
    // --window-bytes 4 MiB, plus the event that overflows it) and the process's RSS.
    let buffered = metric(rig.server.addr, "sse_buffered_bytes").await?;
    let window_bound = (4 << 20) + body.len() + 64;
    report.check(
        buffered <= window_bound as f64,
        format!("buffered bytes {buffered} within the window bound {window_bound} after {} large events", acked.len()),
    );
    let rss = crate::load::proc_stats::rss_bytes(rig.server.pid())?;
    report.check(
        rss <= rig.baseline_rss + (96 << 20),
        format!("server RSS grew {} MiB (bound 96 MiB)", rss.saturating_sub(rig.baseline_rss) >> 20),
    );
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    rig.judge(&acked, report);
    drop(stalled);
    match rig.wait_streams(settings.clients, Duration::from_secs(2)).await {
        Ok(()) => report.check(true, format!("only the {} proxied streams are left", settings.clients)),
        Err(e) => report.check(false, format!("the stalled stream was not freed: {e}")),
    }
    Ok(rig)
}

/// The open-file limit of the server in `fd_exhaustion`: `--max-connections` defaults
/// to it minus 128.
const FD_LIMIT: u64 = 256;
/// Connections the flood opens: well past the limit.
const FLOOD: usize = 400;

/// The server runs under `RLIMIT_NOFILE` 256 (so at most 128 connections) and a flood of
/// 400 stream requests arrives: it keeps serving the streams it has, answers some of the
/// excess 503 + Retry-After, leaves the rest in the backlog, never runs out of
/// descriptors, and serves normally again once the flood leaves.
async fn fd_exhaustion(rig: Rig, settings: &Settings, report: &mut Report) -> anyhow::Result<Rig> {
    let mut publisher = Publisher::connect(rig.server.addr, TOPIC).await?;
    let addr = rig.server.addr;
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| {
            tokio::spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
                let request = format!("GET /events?topic={TOPIC} HTTP/1.1\r\nhost: x\r\n\r\n");
                tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await.ok()?;
                let mut head = [0u8; 12];
                let answered = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut head),
                )
                .await;
                let status = match answered {
                    Ok(Ok(_)) => String::from_utf8_lossy(&head[9..12]).into_owned(),
                    _ => "waiting".to_owned(),
                };
                Some((status, tcp))
            })
        })
        .collect();
    let mut held = Vec::new();
    let (mut served, mut refused, mut waiting) = (0, 0, 0);
    for task in flood {
        if let Some((status, tcp)) = task.await? {
            match status.as_str() {
                "200" => served += 1,
                "503" => refused += 1,
                _ => waiting += 1,
            }
            held.push(tcp);
        }
    }
    let limit = FD_LIMIT as usize - 128;
    report.check(
        served + settings.clients < limit && refused > 0,
        format!("flood of {FLOOD}: {served} served, {refused} refused with 503, {waiting} waiting (limit {limit} connections)"),
    );
    // The streams already open keep receiving while the flood holds every slot.
    let mut acked = Vec::new();
    for i in 0..settings.events / 2 {
        let data = format!("flooded-{i}");
        let id = publisher.publish_for_id(Bytes::from(data.clone())).await?;
        acked.push(Acked { id, data, at: Instant::now() });
    }
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    drop(held);
    drop(publisher);
    match rig.wait_streams(settings.clients, Duration::from_secs(5)).await {
        Ok(()) => report.check(true, format!("the flood left: {} streams again, the server answers", settings.clients)),
        Err(e) => report.check(false, format!("the server did not recover after the flood: {e}")),
    }
    let accept_errors = metric(rig.server.addr, "sse_accept_errors_total").await?;
    report.check(accept_errors == 0.0, format!("{accept_errors} accept errors: admission kept descriptors in reserve"));
    acked.extend(rig.publish(settings.events - settings.events / 2, "after", settings.every).await?);
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    rig.judge(&acked, report);
    Ok(rig)
}

/// The memory cgroup limit in `memory_pressure`; the server's own budget
/// (`--max-buffered-bytes` 64 MiB) is well below it.
const MEMORY_LIMIT: u64 = 256 << 20;
/// Stalled readers (never read, small receive buffers) in `memory_pressure`.
const STALLED: usize = 32;

/// The server in a 256 MiB memory cgroup (or, where none can be made, watched by RSS)
/// with a 64 MiB buffer budget: 32 stalled readers and 60 KiB events on many topics
/// until the budget refuses growth (503 `buffer_full`, read back from `/metrics`). No OOM
/// kill, usage under the limit, the proxied clients get every event of their topic.
async fn memory_pressure(rig: Rig, settings: &Settings, report: &mut Report) -> anyhow::Result<Rig> {
    let cgroup = MemoryCgroup::create(MEMORY_LIMIT);
    match &cgroup {
        Some(group) => {
            group.add(rig.server.pid())?;
            report.check(
                group.limit()? == MEMORY_LIMIT,
                format!("server in a memory cgroup limited to {} MiB", group.limit()? >> 20),
            );
        }
        None => report.check(true, "no writable memory cgroup here: memory is judged by RSS alone"),
    }
    let mut stalled = Vec::new();
    for k in 0..STALLED {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut tcp = socket.connect(rig.server.addr).await?;
        let request = format!("GET /events?topic=pressure-{}&topic={TOPIC} HTTP/1.1\r\nhost: x\r\n\r\n", k % 8);
        tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await?;
        stalled.push(tcp);
    }
    let mut pressure = Publisher::connect(rig.server.addr, "pressure-0").await?;
    let body = Bytes::from("m".repeat(60 << 10));
    let (mut published, mut refused) = (0, false);
    for topic in 0..64 {
        pressure = Publisher::connect(rig.server.addr, &format!("pressure-{topic}")).await.unwrap_or(pressure);
        for _ in 0..80 {
            match pressure.publish(body.clone()).await {
                Ok(()) => published += 1,
                Err(error) if error.to_string().contains("buffer_full") => {
                    refused = true;
                    break;
                }
                Err(error) => {
                    let kills = cgroup.as_ref().and_then(|g| g.oom_kills().ok()).unwrap_or(0);
                    bail!("publishing under pressure failed after {published} events ({kills} OOM kills): {error:#}");
                }
            }
        }
        if refused {
            break;
        }
    }
    let rejected = metric_labelled(rig.server.addr, "sse_rejected_total{reason=\"buffer_full\"}").await?;
    report.check(
        refused && rejected > 0.0,
        format!("{published} events of 60 KiB until the budget refused growth ({rejected} buffer_full answers)"),
    );
    let acked = rig.publish(settings.events, "pressed", settings.every).await?;
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    rig.judge(&acked, report);
    let alive = metric(rig.server.addr, "sse_streams").await.is_ok();
    report.check(alive, "the server is alive and answering");
    let rss = crate::load::proc_stats::rss_bytes(rig.server.pid())?;
    report.check(rss < MEMORY_LIMIT, format!("server RSS {} MiB under {} MiB", rss >> 20, MEMORY_LIMIT >> 20));
    if let Some(group) = &cgroup {
        let (peak, kills) = (group.peak()?, group.oom_kills()?);
        report.check(
            kills == 0 && peak < MEMORY_LIMIT,
            format!("cgroup peak {} MiB of {} MiB, {kills} OOM kills", peak >> 20, MEMORY_LIMIT >> 20),
        );
    }
    drop(stalled);
    Ok(rig)
}

/// SIGSTOP for longer than the write timeout, then SIGCONT: clients notice the silence
/// and reconnect (their connections wait in the backlog); nothing is lost and the dead
/// streams are freed once the server runs again.
async fn sigstop(rig: Rig, settings: &Settings, half: usize, report: &mut Report) -> anyhow::Result<Rig> {
    let mut acked = rig.publish(half, "before", settings.every).await?;
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    let before = rig.connects();
    rig.server.signal(Signal::SIGSTOP)?;
    let stopped_for = WRITE_TIMEOUT + HEARTBEAT * 3;
    // The signal takes effect asynchronously: read the state back until it is `T`.
    let state = |pid: u32| -> anyhow::Result<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Ok(stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).unwrap_or("?").to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut seen = state(rig.server.pid())?;
    while seen != "T" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        seen = state(rig.server.pid())?;
    }
    report.check(seen == "T", format!("SIGSTOP: the server is stopped (state {seen}) for {stopped_for:?}"));
    tokio::time::sleep(stopped_for).await;
    rig.server.signal(Signal::SIGCONT)?;
    let resumed = Instant::now();
    let recovery = rig.settle(&acked, resumed, Duration::from_secs(10)).await;
    acked.extend(rig.publish(settings.events - half, "after", settings.every).await?);
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    let reconnected = rig.connects().iter().zip(&before).all(|(now, then)| now > then);
    report.check(reconnected, format!("every client noticed the silence and reconnected ({})", connects_summary(&rig)));
    report.check(true, format!("had everything acknowledged before the stop {recovery:?} after SIGCONT"));
    rig.judge(&acked, report);
    match rig.wait_streams(settings.clients, WRITE_TIMEOUT + Duration::from_secs(2)).await {
        Ok(()) => report.check(true, format!("the server holds exactly {} streams again", settings.clients)),
        Err(e) => report.check(false, format!("stale streams were not freed: {e}")),
    }
    Ok(rig)
}

/// SIGTERM: every stream is told to come back later, the process exits 0 within the
/// drain timeout, and after a restart on the same directory clients resume with no loss.
async fn sigterm(mut rig: Rig, settings: &Settings, half: usize, report: &mut Report) -> anyhow::Result<Rig> {
    let acked = rig.publish(half, "before", settings.every).await?;
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    rig.server.signal(Signal::SIGTERM)?;
    let status = rig.server.wait_exit(DRAIN_TIMEOUT + Duration::from_secs(2)).await?;
    report.check(status.success(), format!("SIGTERM: the server exited with {status}"));
    let finished = rig
        .subscribers
        .iter()
        .filter(|(r, _)| r.lock().unwrap().ends.iter().any(|e| e == "stream finished by the server"))
        .count();
    report.check(
        finished == settings.clients,
        format!("{finished} of {} streams were ended by the drain", settings.clients),
    );
    restart_and_resume(rig, settings, half, acked, report).await
}

/// SIGKILL while publishing: everything acknowledged before the kill is delivered after
/// a restart on the same directory.
async fn sigkill(mut rig: Rig, settings: &Settings, half: usize, report: &mut Report) -> anyhow::Result<Rig> {
    let acked = rig.publish(half, "before", Duration::ZERO).await?;
    rig.server.signal(Signal::SIGKILL)?;
    let status = rig.server.wait_exit(Duration::from_secs(2)).await?;
    report.check(
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
        format!("SIGKILL right after {half} acknowledged publishes ({status})"),
    );
    restart_and_resume(rig, settings, half, acked, report).await
}

/// Restarts the server on the same port and directory, publishes the rest, and judges
/// everything acknowledged before and after.
async fn restart_and_resume(
    mut rig: Rig,
    settings: &Settings,
    half: usize,
    mut acked: Vec<Acked>,
    report: &mut Report,
) -> anyhow::Result<Rig> {
    rig.server = rig.server.restart().await?;
    rig.baseline_fds = rig.server.open_fds()?;
    let back = Instant::now();
    let recovery = rig.settle(&acked, back, Duration::from_secs(10)).await;
    report.check(true, format!("had everything acknowledged before the fault {recovery:?} after the restart"));
    acked.extend(rig.publish(settings.events - half, "after", settings.every).await?);
    rig.settle(&acked, Instant::now(), Duration::from_secs(10)).await;
    rig.judge(&acked, report);
    Ok(rig)
}

/// Runs scenarios by name (`all` for every one) and returns their reports.
pub async fn run_many(which: &str, settings: &Settings) -> anyhow::Result<Vec<Report>> {
    let names: Vec<&str> = if which == "all" { SCENARIOS.to_vec() } else { vec![which] };
    if let Some(unknown) = names.iter().find(|n| !SCENARIOS.contains(n)) {
        bail!("no scenario {unknown:?}; scenarios: {}", SCENARIOS.join(", "));
    }
    let mut reports = Vec::new();
    for name in names {
        // A run that cannot even start is a failed report, and the others still run.
        let report = run(name, settings).await.unwrap_or_else(|error| Report {
            scenario: name.to_owned(),
            seed: settings.seed,
            notes: Vec::new(),
            failures: vec![format!("could not run: {error:#}")],
        });
        reports.push(report);
    }
    Ok(reports)
}
