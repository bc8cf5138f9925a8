//! The real backend for plans: one plan from `sse-plan`, run against the `sse-server`
//! binary, real sockets and a real Toxiproxy, recorded in the same records as the
//! simulation and judged by the same oracle.
//!
//! Each client reaches the server through a Toxiproxy proxy of its own (`c<N>`), so a
//! client's fault is that client's; [`PUBLISHERS`] publishers talk to the server
//! directly, concurrently, each at the plan's pace. Times in
//! the plan are from the run's start; each fault is applied when due (the trace records
//! the actual time, and one applied more than [`TOLERANCE`] late is reported, counted from
//! the end of the runner's own last boot when a fault fell due during it) and every
//! toxic is read back from the API before it counts. The mapping:
//!
//! | plan | here |
//! |---|---|
//! | max_latency | `latency` L/2 ± L/2 downstream on every client's link, all run long |
//! | partition | `timeout` 0 both ways; on heal, a connection that lived through it is reset (it lost bytes, which TCP never does, so it must not be read on) |
//! | hold | `latency` of the hold's length downstream, removed at release (what was held arrives then); it shares a link with latency only: a hold is skipped on a link with another fault on it, and another fault but a lag on a link with a hold, each logged (see `LinkUse`) |
//! | lag | `latency` L/2 ± L/2 downstream |
//! | drop, drop_all | a one-shot `reset_peer`, removed once the client's stream ended |
//! | cut | Toxiproxy's `limit_data` of N bytes as a one-shot, when no other toxic is on the link; otherwise the client closes its connection after N more bytes (as the simulated client does), because behind another toxic `limit_data` deadlocks Toxiproxy's chain (a `latency` toxic blocks handing data to a `limit_data` that stopped reading, and removing it hangs) |
//! | stall | the client stops reading (queued on its link, so it is never beside a hold) |
//! | crash | SIGKILL, restart on the same data directory when it heals |
//! | restart | SIGTERM; the process must have exited 0 (drained) by the heal, then restarts |
//! | move | SIGTERM; once it exited, a second process on the same data directory and a new port, every proxy repointed through the API, the publisher follows |
//! | freeze | SIGSTOP, read back from `/proc/PID/stat`; SIGCONT at the heal |
//! | slicer (real only) | `slicer` 8 ± 7 bytes, 1 ms apart, for the duration |
//! | bandwidth (real only) | `bandwidth` of the plan's KB/s for the duration |
//! | slowloris | raw connections to the server that trickle a request head; each must be closed within the header timeout (+ 500 ms) |
//! | slow_close (real only) | `slow_close` of the plan's delay downstream, for the duration |
//! | flood | raw stream requests straight to the server, held for the duration; how many were served, refused (`503`) or left waiting is logged |
//! | event_bytes | padding in every published event |
//! | max_buffered_kb | `--max-buffered-bytes` |
//! | nofile (real only) | the server under `prlimit --nofile` |
//! | memory_limit_mb (real only) | the server in a memory cgroup of that limit (where one can be made; otherwise logged as skipped); it must never be OOM-killed and its peak stays under the limit |
//! | expect, expect_real | read from the last boot's `/metrics` at the end |
//! | reverse_proxy nginx (real only) | a stock nginx between every client's proxy and the server ([`super::nginx`]); a move reloads it towards the new process instead of repointing the proxies |
//!
//! The run starts (time zero of the plan) once every client's stream is open.
//!
//! The store: `fresh` runs `--store memory` (a restart is a new history), `durable` the
//! disk store with `--fsync always`, `interval` the disk store with `--fsync
//! interval:200ms`, whose crash may take back what was acknowledged in the last 200 ms
//! (the oracle excuses acknowledgements in that window, as the simulation excuses the
//! events its power cut forgot).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use sse_plan::plan::metric_value;
use sse_plan::record::Acked;
use sse_plan::{oracle, Fault, Plan, StoreMode, Timing};
use sse_server::rng::SeededRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::attacks;
use super::cgroup::MemoryCgroup;
use super::nginx::Nginx;
use super::observe::{self, metric_within};
use super::processes::{ServerProcess, ToxiproxyServer};
use super::roster::{self, Churn, Owned, Seat};
use super::toxiproxy::{Direction, Toxic, Toxiproxy};
use crate::load::publisher::exposition;

/// How late a fault may be applied before the report says so.
pub const TOLERANCE: Duration = Duration::from_millis(250);
/// The interval store's sync period (the simulation's interval store syncs as often).
const INTERVAL_SYNC: Duration = Duration::from_millis(200);

/// What a real run of a plan found.
#[derive(Debug, Default)]
pub struct RealOutcome {
    pub seed: u64,
    /// The oracle's and the run's own failures; empty: the plan passed.
    pub failures: Vec<String>,
    /// Faults applied and healed, with their actual times from the run's start.
    pub trace: Vec<String>,
    /// Per client, from the last heal until caught up.
    pub recoveries: Vec<Duration>,
    pub acked: usize,
    pub took: Duration,
    /// Availability samples and the server's gauges over the run.
    pub observed: observe::Observed,
    /// The topics each client seat followed.
    pub client_topics: Vec<BTreeSet<String>>,
    /// Per client seat, the streams its clients opened.
    pub connects: Vec<u32>,
    /// Every event a client received: (when, from the run's start; how long after its
    /// publish was sent).
    pub deliveries: Vec<(Duration, Duration)>,
    /// When the last fault healed (and publishing stopped), from the run's start.
    pub calm_from: Duration,
}

impl RealOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The server process slot: one process on the service's data directory at a time.
struct Slot {
    server: ServerProcess,
    boot: u32,
    /// Boots signalled with SIGTERM, and those of them that exited 0 by themselves.
    signalled: Vec<u32>,
    drained: Vec<u32>,
    /// Boots a crash ended.
    crashed: Vec<u32>,
    /// The boot a move is draining.
    moving: Option<u32>,
    /// The boot a restart is draining.
    draining: Option<u32>,
    /// When each crash happened (for the interval store's window).
    crashes: Vec<Duration>,
    /// The boot a freeze stopped.
    frozen: Option<u32>,
    /// The plan's memory cgroup, which every boot joins.
    cgroup: Option<MemoryCgroup>,
}

impl Slot {
    /// Puts a new boot in the memory cgroup, if the plan has one.
    fn join_cgroup(&self) -> anyhow::Result<()> {
        self.cgroup.as_ref().map_or(Ok(()), |group| group.add(self.server.pid()))
    }

    fn running(&mut self) -> bool {
        matches!(self.server.exited(), Ok(None))
    }

    /// Notes a clean exit of a signalled boot.
    fn note_exit(&mut self) {
        if let Ok(Some(status)) = self.server.exited() {
            if status.code() == Some(0) && self.signalled.contains(&self.boot) && !self.drained.contains(&self.boot) {
                self.drained.push(self.boot);
            }
        }
    }
}

/// What a fault does to a client's link, for the one rule about sharing it: while a hold
/// is on a link, nothing but latency shares it. Releasing a hold takes its `latency`
/// toxic off, and Toxiproxy then pushes everything the hold kept through whatever follows
/// it, with the proxy locked (`toxic_collection.go`, `link.go`): behind a toxic that reads
/// slowly or not at all (`slicer`, `bandwidth`, `slow_close`, `timeout`, `reset_peer`,
/// `limit_data`), or into a client that stopped reading or closed its end (a stall, a
/// cut), that outlasts its 25 s API timeout and the proxy stays wedged. Two 1-hour soaks
/// hit it (behind a `slicer` and `bandwidth`; into a stalled client). So a hold is
/// skipped on a link with another fault on it, and another fault (but a lag) is skipped
/// on a link with a hold; each skip is logged. A lag that would still be on when the
/// client cuts its connection ends at the cut, for the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkUse {
    Hold,
    /// A `latency` toxic (a lag, the run-long jitter): it reads as fast as it is fed.
    Latency,
    Other,
}

impl LinkUse {
    fn of(kind: &str) -> LinkUse {
        match kind {
            "latency" => LinkUse::Latency,
            _ => LinkUse::Other,
        }
    }
}

/// The name of the run-long latency toxic on every client's link (`max_latency_ms`).
const JITTER: &str = "jitter";

/// Everything one run shares between its parts.
struct Run {
    origin: Instant,
    toxiproxy: Toxiproxy,
    clients: Vec<Client>,
    seats: Arc<Vec<Seat>>,
    trace: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
    /// Why the run cannot go on (Toxiproxy failed it): ends the run at once.
    broken: watch::Sender<Option<String>>,
}

struct Client {
    proxy: String,
    /// Toxiproxy work for this client's link, done in order by a task of its own, so a
    /// slow API call (removing a toxic waits for the data it holds) never stalls the
    /// timeline.
    link: mpsc::UnboundedSender<(Instant, LinkOp)>,
}

/// Work on one client's link.
enum LinkOp {
    Add(Toxic),
    /// A hold: a `latency` toxic as long as the hold (see [`LinkUse`] for what it
    /// never shares a link with); `patience`: it would last to within a second of the
    /// client's patience with a silent stream.
    AddHold {
        toxic: Toxic,
        patience: bool,
    },
    /// The client stops reading for a while (the fault's name for the trace).
    Stall(Duration, String),
    Remove(String),
    /// Add, wait until the client's stream ended (or two seconds), remove.
    OneShot(Toxic),
    /// A partition's heal: remove its toxics; a stream that lived through it (its end
    /// count still `ends_at_apply`) lost bytes and is reset.
    HealPartition {
        names: [String; 2],
        ends_at_apply: usize,
        reset: Toxic,
    },
    /// The plan's cut of `after_bytes` (see the module's table).
    Cut {
        name: String,
        after_bytes: usize,
    },
    /// Answers once everything queued before it is done.
    Flush(oneshot::Sender<()>),
}

impl Run {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn log(&self, what: impl std::fmt::Display) {
        let line = format!("{:>9.3}s {what}", self.now().as_secs_f64());
        self.trace.lock().unwrap().push(line);
    }

    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    /// Ends the run at once: a fault that Toxiproxy did not apply or remove as asked
    /// leaves nothing after it worth judging.
    fn break_off(&self, what: String) {
        let what = format!("at {:.3}s, {what}", self.now().as_secs_f64());
        self.log(&what);
        let _ = self.broken.send(Some(what));
    }

    fn ends(&self, client: usize) -> usize {
        self.seats[client].current().map_or(0, |record| record.lock().unwrap().ends.len())
    }

    /// Does the link work of client `client`, in order, until its queue closes.
    async fn link_worker(
        self: Arc<Run>,
        client: usize,
        mut ops: mpsc::UnboundedReceiver<(Instant, LinkOp)>,
        jitter: bool,
    ) {
        let proxy = self.clients[client].proxy.clone();
        // Toxics on the link now (the run-long jitter among them).
        let mut on_link: BTreeMap<String, LinkUse> =
            jitter.then(|| (JITTER.to_owned(), LinkUse::Latency)).into_iter().collect();
        while let Some((queued, op)) = ops.recv().await {
            // Work waits behind slower work on the same link (a one-shot waits up to 2 s
            // for the stream to end): the trace says when that made it late.
            let late = queued.elapsed();
            if late > TOLERANCE && !matches!(op, LinkOp::Flush(_)) {
                self.log(format_args!(
                    "{proxy}: link work starts {late:.1?} after it was due (queued behind other work)"
                ));
            }
            let hold = on_link.iter().find(|(_, on)| **on == LinkUse::Hold).map(|(name, _)| name.clone());
            let done = match op {
                LinkOp::Add(toxic) | LinkOp::OneShot(toxic)
                    if hold.is_some() && LinkUse::of(toxic.kind) == LinkUse::Other =>
                {
                    self.skip_beside_hold(&proxy, &toxic.name, hold.as_deref().unwrap_or_default());
                    Ok(())
                }
                LinkOp::Cut { name, .. } | LinkOp::Stall(_, name) if hold.is_some() => {
                    self.skip_beside_hold(&proxy, &name, hold.as_deref().unwrap_or_default());
                    Ok(())
                }
                LinkOp::AddHold { toxic, patience: true } => {
                    // The client would close its stream about when the hold ends, and
                    // Toxiproxy wedges releasing a hold into a closed connection (its
                    // removal waits on a writer that is gone; disabling the proxy first
                    // does not help, tried): a 1-hour soak hit this at 3,018 s.
                    self.log(format_args!(
                        "skip {} on {proxy}: it would last to within 1 s of the client giving up on the silent stream, or past it, and Toxiproxy cannot release a hold into a closed connection",
                        toxic.name
                    ));
                    Ok(())
                }
                LinkOp::AddHold { toxic, .. } => {
                    let record = self.seats[client].current();
                    let client_side = record.is_some_and(|r| {
                        let r = r.lock().unwrap();
                        r.cut_after.is_some() || r.stall_until.is_some_and(|until| until > Instant::now())
                    });
                    let other = on_link.iter().find(|(_, on)| **on != LinkUse::Latency).map(|(name, _)| name.clone());
                    match other.or(client_side.then(|| "a stall or cut by the client".to_owned())) {
                        Some(other) => {
                            self.skip_beside_hold(&proxy, &toxic.name, &other);
                            Ok(())
                        }
                        None => self.add_on_link(&proxy, &mut on_link, toxic, LinkUse::Hold).await,
                    }
                }
                LinkOp::Add(toxic) => {
                    let usage = LinkUse::of(toxic.kind);
                    self.add_on_link(&proxy, &mut on_link, toxic, usage).await
                }
                LinkOp::Stall(duration, _) => {
                    if let Some(record) = self.seats[client].current() {
                        record.lock().unwrap().stall_until = Some(Instant::now() + duration);
                    }
                    self.log(format_args!("{proxy}: the client stops reading for {duration:?}"));
                    Ok(())
                }
                LinkOp::Remove(name) if !on_link.contains_key(&name) => {
                    self.log(format_args!(
                        "nothing to remove on {proxy}: {name} is not on (skipped, or ended at a cut)"
                    ));
                    Ok(())
                }
                LinkOp::Remove(name) => {
                    let removed = self.toxiproxy.remove_toxic(&proxy, &name).await;
                    on_link.remove(&name);
                    removed.map(|()| self.log(format_args!("removed {name} on {proxy}")))
                }
                LinkOp::Cut { name, after_bytes } if on_link.is_empty() => {
                    let toxic =
                        Toxic::named(name, "limit_data", Direction::Downstream, &[("bytes", after_bytes as u64)]);
                    self.one_shot(client, toxic, Instant::now() + Duration::from_secs(2)).await;
                    Ok(())
                }
                LinkOp::Cut { after_bytes, .. } => {
                    // A lag still on when the client closes cannot be taken off later:
                    // Toxiproxy pushes what it holds into the closed connection with the
                    // proxy locked, and its API gives up after 25 s (a run beside a busy
                    // core hit it). The lag ends here instead; the run-long jitter stays.
                    let lags: Vec<String> = on_link
                        .iter()
                        .filter(|(name, on)| **on == LinkUse::Latency && name.as_str() != JITTER)
                        .map(|(name, _)| name.clone())
                        .collect();
                    let mut removed = Ok(());
                    for name in lags {
                        removed = removed.and(self.toxiproxy.remove_toxic(&proxy, &name).await);
                        on_link.remove(&name);
                        self.log(format_args!(
                            "{proxy}: {name} ends at the cut (Toxiproxy cannot take a lag off a link whose client closed)"
                        ));
                    }
                    if let Some(record) = self.seats[client].current() {
                        record.lock().unwrap().cut_after = Some(after_bytes);
                    }
                    self.log(format_args!(
                        "{proxy}: the client cuts after {after_bytes} bytes (other toxics on the link)"
                    ));
                    removed
                }
                LinkOp::OneShot(toxic) => {
                    self.one_shot(client, toxic, Instant::now() + Duration::from_secs(2)).await;
                    Ok(())
                }
                LinkOp::HealPartition { names, .. } if !names.iter().all(|name| on_link.contains_key(name)) => {
                    self.log(format_args!("nothing to heal on {proxy}: {} was skipped", names[0]));
                    Ok(())
                }
                LinkOp::HealPartition { names, ends_at_apply, reset } => {
                    let mut result = Ok(());
                    for name in &names {
                        result = result.and(self.toxiproxy.remove_toxic(&proxy, name).await);
                        on_link.remove(name);
                    }
                    // Toxiproxy usually closes such a connection as the toxic goes.
                    let survived = self.ends(client) == ends_at_apply;
                    self.log(format_args!(
                        "{proxy}: the stream {} the partition",
                        if survived { "lived through" } else { "ended in" }
                    ));
                    if survived {
                        self.one_shot(client, reset, Instant::now() + Duration::from_secs(2)).await;
                    }
                    result
                }
                LinkOp::Flush(done) => {
                    let _ = done.send(());
                    Ok(())
                }
            };
            if let Err(error) = done {
                self.break_off(format!("{proxy}: {error:#}"));
            }
        }
    }

    /// Logs a fault skipped for sharing a link with a hold (see [`LinkUse`]).
    fn skip_beside_hold(&self, proxy: &str, what: &str, other: &str) {
        self.log(format_args!("skip {what} on {proxy}: {other} is on the link (a hold shares it with latency only)"));
    }

    /// Adds a toxic to a client's link and notes it there.
    async fn add_on_link(
        &self,
        proxy: &str,
        on_link: &mut BTreeMap<String, LinkUse>,
        toxic: Toxic,
        usage: LinkUse,
    ) -> anyhow::Result<()> {
        self.toxiproxy.add_toxic(proxy, &toxic).await?;
        on_link.insert(toxic.name.clone(), usage);
        self.log(format_args!("applied {} on {proxy} (read back)", toxic.name));
        Ok(())
    }

    /// Queues work on a client's link.
    fn link(&self, client: usize, op: LinkOp) {
        // The worker lives as long as the run.
        let _ = self.clients[client].link.send((Instant::now(), op));
    }

    /// Adds a toxic (read back by the API client) that must end the client's current
    /// stream, waits until it did (or `until`), and removes it.
    async fn one_shot(self: &Arc<Run>, client: usize, toxic: Toxic, until: Instant) {
        let proxy = self.clients[client].proxy.clone();
        let before = self.ends(client);
        if let Err(error) = self.toxiproxy.add_toxic(&proxy, &toxic).await {
            return self.break_off(format!("{} on {proxy}: {error:#}", toxic.name));
        }
        self.log(format_args!("applied {} on {proxy}", toxic.kind));
        while self.ends(client) == before && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ended = self.ends(client) > before;
        if let Err(error) = self.toxiproxy.remove_toxic(&proxy, &toxic.name).await {
            return self.break_off(format!("remove {} on {proxy}: {error:#}", toxic.name));
        }
        self.log(format_args!(
            "removed {} on {proxy} ({})",
            toxic.kind,
            if ended { "the stream ended" } else { "the stream outlived it" }
        ));
    }
}

/// The flags for boot `boot`: the plan's, plus for the `fresh` store an epoch of the boot's
/// own (as the simulation draws one per boot), so a restart really is a new history.
fn boot_flags(base: &[String], plan: &Plan, seed: u64, boot: u32) -> Vec<String> {
    let mut args = base.to_vec();
    if plan.store == StoreMode::Fresh {
        let epoch = SeededRng::new(seed ^ u64::from(boot).wrapping_mul(0x9e37_79b9)).next_u64() as u32;
        args.extend(["--epoch".to_owned(), format!("{epoch:08x}")]);
    }
    args
}

pub(super) fn flags(plan: &Plan, seed: u64, timing: &Timing) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut args = vec![
        ("--heartbeat", ms(timing.heartbeat)),
        ("--retry", ms(timing.retry)),
        ("--retry-jitter", ms(timing.retry_jitter)),
        ("--write-timeout", ms(timing.write_timeout)),
        ("--header-timeout", ms(timing.header_timeout)),
        ("--drain-timeout", ms(timing.drain_timeout)),
        ("--window", plan.window.to_string()),
        ("--coalesce", if plan.coalesce_auto { "auto".into() } else { format!("{}ms", plan.coalesce_ms) }),
        ("--coalesce-budget", format!("{}ms", plan.coalesce_ms.max(1))),
        ("--seed", seed.to_string()),
    ];
    if let Some(kb) = plan.max_buffered_kb {
        args.push(("--max-buffered-bytes", (kb * 1024).to_string()));
    }
    match plan.store {
        StoreMode::Fresh => args.push(("--store", "memory".into())),
        StoreMode::Durable => args.push(("--fsync", "always".into())),
        StoreMode::Interval => args.push(("--fsync", format!("interval:{}", ms(INTERVAL_SYNC)))),
    }
    args.into_iter().flat_map(|(k, v)| [k.to_owned(), v]).collect()
}

/// Publishers running at once, each at the plan's pace: a crash lands inside a storm of
/// concurrent publishes, so an acknowledgement that ran ahead of the store's sync shows.
pub const PUBLISHERS: usize = 4;

/// One publisher: from 1 s until the plan's end, every `publish_every`, to a seeded topic
/// at a time, each event on a fresh connection to wherever the service is now; records
/// every `201`. An attempt that got no answer is retried under the same
/// `Idempotency-Key` while the event's slot lasts, so a lost answer never stores a
/// duplicate.
pub(super) async fn publish(
    plan: Plan,
    seed: u64,
    tag: usize,
    origin: Instant,
    service: watch::Receiver<SocketAddr>,
    acked: Arc<Mutex<Vec<Acked>>>,
) {
    let rng = SeededRng::new(seed);
    let topics = plan.topic_names();
    let padding = plan.padding();
    tokio::time::sleep_until(origin + Duration::from_secs(1)).await;
    let mut n = 0u64;
    while origin.elapsed() < plan.publish_until() {
        let next = Instant::now() + plan.publish_every;
        let topic = &topics[rng.up_to(topics.len() as u64 - 1) as usize];
        let data = format!("{topic}#p{tag}.{n}{padding}");
        n += 1;
        let key = format!("p{tag}.{n}");
        let sent = origin.elapsed();
        for _ in 0..PUBLISH_ATTEMPTS {
            let addr = *service.borrow();
            let attempt = tokio::time::timeout(Duration::from_secs(1), post(addr, topic, &key, &data)).await;
            if let Ok(Ok(id)) = attempt {
                let mut acked = acked.lock().unwrap();
                // Stamped under the lock, so the list stays in time order.
                acked.push(Acked { at: origin.elapsed(), sent, id, topic: topic.clone(), data });
                break;
            }
            if origin.elapsed() >= plan.publish_until() {
                break;
            }
        }
        tokio::time::sleep_until(next).await;
    }
}

/// Tries per published event.
const PUBLISH_ATTEMPTS: usize = 3;

/// One publish on a fresh connection under idempotency key `key`; the acknowledged id.
async fn post(addr: SocketAddr, topic: &str, key: &str, data: &str) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    let head = format!(
        "POST /events?topic={topic} HTTP/1.1\r\nhost: chaos\r\nidempotency-key: {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{data}",
        data.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    anyhow::ensure!(answer.starts_with("HTTP/1.1 201"), "not acknowledged");
    let id = answer.split("\"id\":\"").nth(1).and_then(|r| r.split('"').next()).context("an id")?;
    Ok(id.to_owned())
}

/// Events acknowledged this long before a client subscribed are left out of its
/// judgement (they were in the history before its position; an acknowledgement can come
/// a little before its event is visible, hence the margin).
pub(super) const JOIN_MARGIN: Duration = Duration::from_secs(2);

/// How often a run checks that Toxiproxy is alive and answering.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// Runs `plan` for real under `seed` (a cluster plan, `cluster N`, on
/// [`super::cluster_run`]).
pub async fn run(seed: u64, plan: &Plan) -> anyhow::Result<RealOutcome> {
    if plan.cluster.is_some() {
        return super::cluster_run::run(seed, plan).await;
    }
    run_churning(seed, plan, Vec::new()).await
}

/// Runs `plan` for real under `seed`, with clients that come and go as `churn` says
/// (sorted by time). A Toxiproxy that exits or stops answering, or that fails an API call,
/// ends the run at once with an error that quotes the end of its log: every fault after
/// it would be judged without having been applied.
pub async fn run_churning(seed: u64, plan: &Plan, churn: Vec<Churn>) -> anyhow::Result<RealOutcome> {
    let mut toxiproxy = ToxiproxyServer::start(seed).await?;
    let (broken_tx, mut broken) = watch::channel(None);
    let client = toxiproxy.client;
    let outcome = tokio::select! {
        biased;
        outcome = run_on(seed, plan, churn, client, broken_tx) => outcome,
        why = toxiproxy_lost(&mut toxiproxy, &mut broken) => return Err(anyhow::anyhow!(why)),
    };
    // A setup call that failed (creating a proxy, repointing one) quotes the log too.
    outcome.map_err(|error| error.context(format!("Toxiproxy's log ends:\n{}", toxiproxy.log_tail())))
}

/// Resolves once Toxiproxy failed the run (an API call failed, its process exited or its
/// API stopped answering), with why.
async fn toxiproxy_lost(server: &mut ToxiproxyServer, broken: &mut watch::Receiver<Option<String>>) -> String {
    loop {
        tokio::select! {
            // An error here means the run is over (its sender is gone): the other branch won.
            Ok(why) = broken.wait_for(Option::is_some) => {
                let why = why.clone().unwrap_or_default();
                return format!("{why}\nToxiproxy's log ends:\n{}", server.log_tail());
            }
            () = tokio::time::sleep(HEALTH_EVERY) => {
                if let Err(error) = server.health().await {
                    return format!("{error:#}");
                }
            }
        }
    }
}

async fn run_on(
    seed: u64,
    plan: &Plan,
    churn: Vec<Churn>,
    toxiproxy: Toxiproxy,
    broken: watch::Sender<Option<String>>,
) -> anyhow::Result<RealOutcome> {
    let timing = Timing::PLANS;
    let data = tempfile::tempdir()?;
    let dir = data.path().join("data");
    let args = flags(plan, seed, &timing);
    let server = ServerProcess::start(&dir, &boot_flags(&args, plan, seed, 1), plan.nofile).await?;
    let baseline = Leftovers::baseline(server.addr, &server).await;
    let mut setup_log = Vec::new();
    let cgroup = match plan.memory_limit_mb {
        None => None,
        Some(mb) => match MemoryCgroup::create(mb << 20) {
            Some(group) => {
                group.add(server.pid())?;
                let limit = group.limit()?;
                anyhow::ensure!(limit == mb << 20, "the cgroup's limit reads back as {limit}");
                setup_log.push(format!("memory cgroup of {mb} MiB (read back), boot 1 in it"));
                Some(group)
            }
            None => {
                setup_log.push(format!("skip memory_limit_mb {mb}: no writable memory cgroup on this machine"));
                None
            }
        },
    };
    // What the clients' proxies forward to: the server, or nginx in front of it.
    let nginx = match plan.nginx {
        true => Some(Nginx::start(server.addr).await?),
        false => None,
    };
    let front = nginx.as_ref().map_or(server.addr, |n| n.addr);
    if let Some(nginx) = &nginx {
        setup_log.push(format!("nginx on {} in front of the server (read back: /metrics through it)", nginx.addr));
    }
    let (service_tx, service) = watch::channel(server.addr);
    let rng = SeededRng::new(seed);
    let topics = plan.client_topics(&rng);
    let (stop_tx, stop) = watch::channel(false);
    let mut clients = Vec::new();
    let mut seats = Vec::new();
    let mut link_queues = Vec::new();
    for (i, topics) in topics.iter().enumerate() {
        let proxy = format!("c{i}");
        let listen = toxiproxy.create_proxy(&proxy, front).await?;
        // The plan's link jitter, on every client's link for the whole run.
        let half = (plan.max_latency.as_millis() / 2) as u64;
        if half > 0 {
            let jitter =
                Toxic::named(JITTER.into(), "latency", Direction::Downstream, &[("latency", half), ("jitter", half)]);
            toxiproxy.add_toxic(&proxy, &jitter).await?;
        }
        seats.push(Seat::new(topics.clone(), listen, timing.heartbeat));
        let (link, ops) = mpsc::unbounded_channel();
        clients.push(Client { proxy, link });
        link_queues.push((ops, half > 0));
    }
    // Time zero of the plan: every client's stream is open.
    let connected_within = Duration::from_secs(10) + Duration::from_millis(10) * plan.clients as u32;
    let deadline = Instant::now() + connected_within;
    loop {
        let streams = metric_within(server.addr, "sse_streams").await.unwrap_or(-1.0);
        if streams >= plan.clients as f64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{streams} of {} streams open after {connected_within:?}",
            plan.clients
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let origin = Instant::now();
    let seats = Arc::new(seats);
    let run = Arc::new(Run {
        origin,
        toxiproxy,
        clients,
        seats: seats.clone(),
        trace: Mutex::default(),
        failures: Mutex::default(),
        broken,
    });
    setup_log.iter().for_each(|line| run.log(line));
    let _link_workers: Vec<Owned<()>> = link_queues
        .into_iter()
        .enumerate()
        .map(|(client, (ops, jitter))| Owned::spawn(run.clone().link_worker(client, ops, jitter)))
        .collect();
    let churn = {
        let run = run.clone();
        Owned::spawn(roster::churn(origin, seats.clone(), churn, move |line| run.log(line)))
    };
    let acked_live: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|tag| {
            let publisher = publish(plan.clone(), rng.next_u64(), tag, origin, service.clone(), acked_live.clone());
            Owned::spawn(publisher)
        })
        .collect();
    let observer =
        Owned::spawn(observe::watch(origin, service.clone(), acked_live.clone(), seats.clone(), stop.clone()));
    let budget = plan.buffer_budget() as f64;
    let mut slot = Slot {
        server,
        boot: 1,
        signalled: Vec::new(),
        drained: Vec::new(),
        crashed: Vec::new(),
        moving: None,
        draining: None,
        crashes: Vec::new(),
        frozen: None,
        cgroup,
    };

    let events = plan.timeline();
    let calm_from = plan.calm_from();
    let mut next = 0;
    let mut attacks = Vec::new();
    // Ends of each partitioned client's streams when its partition began.
    let mut partitioned: BTreeMap<usize, usize> = BTreeMap::new();
    // Faults skipped because another one had the server (their heals do nothing).
    let mut not_applied = BTreeSet::new();
    // The boot each restart or move signalled.
    let mut signalled: BTreeMap<usize, u32> = BTreeMap::new();
    // When the runner's own last boot (a restart or a move, waited for until the server
    // answers) ended: a fault due meanwhile waited for it, which is logged, not failed.
    let mut booted_at = Duration::ZERO;
    while next < events.len() || slot.moving.is_some() {
        slot.note_exit();
        // A moved server that never exits (a drain that hangs) must not hang the run.
        let overdue = origin + calm_from + timing.drain_timeout + Duration::from_secs(2);
        if slot.moving.is_some() && next >= events.len() && slot.running() && Instant::now() > overdue {
            run.fail("the server signalled for a move never exited; killed".to_owned());
            slot.server.signal(Signal::SIGKILL)?;
            slot.server.wait_exit(Duration::from_secs(5)).await?;
        }
        if let Some(boot) = slot.moving.filter(|_| !slot.running()) {
            let moved = ServerProcess::start(&dir, &boot_flags(&args, plan, seed, slot.boot + 1), plan.nofile).await?;
            run.log(format_args!("boot {boot} exited: the service moves to {}", moved.addr));
            slot.server = moved;
            slot.join_cgroup()?;
            slot.boot += 1;
            slot.moving = None;
            match &nginx {
                Some(nginx) => {
                    nginx.repoint(slot.server.addr).await?;
                    run.log(format_args!("nginx reloaded towards {} (read back)", slot.server.addr));
                }
                None => {
                    for client in &run.clients {
                        run.toxiproxy.set_upstream(&client.proxy, slot.server.addr).await?;
                    }
                }
            }
            let _ = service_tx.send(slot.server.addr);
            run.log(format_args!("boot {}: every proxy and the publisher follow", slot.boot));
            booted_at = origin.elapsed();
        }
        let Some(&(at, heal, i)) = events.get(next) else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        if origin.elapsed() < at {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        next += 1;
        let now = origin.elapsed();
        if booted_at > at + TOLERANCE {
            run.log(format_args!(
                "fault {i} waited {:?} for the runner's boot before it",
                booted_at.saturating_sub(at)
            ));
        }
        let late = now.saturating_sub(at.max(booted_at));
        if late > TOLERANCE {
            run.fail(format!(
                "fault {i} ({:?}) {} {late:?} late",
                plan.faults[i].fault,
                if heal { "healed" } else { "applied" }
            ));
        }
        let fault = &plan.faults[i].fault;
        let client = |c: &usize| *c % plan.clients;
        if heal && not_applied.contains(&i) {
            run.log(format_args!("nothing to heal: {fault:?} was skipped"));
            continue;
        }
        if heal {
            run.log(format_args!("heal {fault:?}"));
            match fault {
                Fault::Partition { client: c, .. } => {
                    let names = [format!("partition{i}_up"), format!("partition{i}_down")];
                    let ends_at_apply = partitioned.remove(&client(c)).unwrap_or(usize::MAX);
                    let reset = Toxic::named(
                        format!("partition{i}_reset"),
                        "reset_peer",
                        Direction::Downstream,
                        &[("timeout", 0)],
                    );
                    run.link(client(c), LinkOp::HealPartition { names, ends_at_apply, reset });
                }
                Fault::Hold { client: c, .. } => run.link(client(c), LinkOp::Remove(format!("hold{i}"))),
                Fault::Lag { client: c, .. } => run.link(client(c), LinkOp::Remove(format!("lag{i}"))),
                Fault::Crash { .. } | Fault::Restart { .. } => {
                    if let Some(boot) = signalled.remove(&i) {
                        check_drained(&run, &mut slot, boot, fault);
                    }
                    if slot.moving.is_none() && !slot.running() {
                        slot.note_exit();
                        slot.server.start_again(&boot_flags(&args, plan, seed, slot.boot + 1)).await?;
                        slot.join_cgroup()?;
                        slot.boot += 1;
                        run.log(format_args!("boot {} started on {}", slot.boot, slot.server.addr));
                        booted_at = origin.elapsed();
                    } else {
                        run.log("the server already runs: nothing to start");
                    }
                }
                Fault::Freeze { .. } => {
                    let frozen = slot.frozen.take();
                    if frozen == Some(slot.boot) && slot.running() {
                        slot.server.signal(Signal::SIGCONT)?;
                        wait_state(&slot.server, |state| state != 'T').await?;
                        run.log(format_args!("boot {} thawed (read back: running)", slot.boot));
                    }
                }
                Fault::Slicer { client: c, .. } => run.link(client(c), LinkOp::Remove(format!("slicer{i}"))),
                Fault::Bandwidth { client: c, .. } => run.link(client(c), LinkOp::Remove(format!("bandwidth{i}"))),
                Fault::SlowClose { client: c, .. } => run.link(client(c), LinkOp::Remove(format!("slow_close{i}"))),
                Fault::Move { .. } => {
                    if let Some(boot) = signalled.remove(&i) {
                        check_drained(&run, &mut slot, boot, fault);
                    }
                }
                _ => {}
            }
            continue;
        }
        // Overlapping process faults, one meaning in both tiers: a server that is down,
        // draining, moving or frozen acts on no signal.
        let conflict = match fault {
            Fault::Restart { .. } | Fault::Move { .. } => {
                (!slot.running() || slot.moving.is_some() || slot.frozen.is_some())
                    .then_some("the server is down, moving or frozen")
            }
            Fault::Freeze { .. } => {
                (!slot.running() || slot.frozen.is_some() || slot.draining.is_some() || slot.moving.is_some())
                    .then_some("the server is down, draining, moving or frozen")
            }
            cluster if cluster.is_cluster() => Some("a cluster fault, and this run has one node (`cluster N` runs it)"),
            _ => None,
        };
        if let Some(why) = conflict {
            run.log(format_args!("skip {fault:?}: {why}"));
            not_applied.insert(i);
            continue;
        }
        run.log(format_args!("apply {fault:?}"));
        match fault {
            Fault::Partition { client: c, .. } => {
                partitioned.insert(client(c), run.ends(client(c)));
                for (way, stream) in [("up", Direction::Upstream), ("down", Direction::Downstream)] {
                    let toxic = Toxic::named(format!("partition{i}_{way}"), "timeout", stream, &[("timeout", 0)]);
                    run.link(client(c), LinkOp::Add(toxic));
                }
            }
            Fault::Hold { client: c, release_after } => {
                let ms = release_after.as_millis() as u64;
                let toxic = Toxic::named(
                    format!("hold{i}"),
                    "latency",
                    Direction::Downstream,
                    &[("latency", ms), ("jitter", 0)],
                );
                // The client gives up on a stream silent for three heartbeats. The second
                // of margin covers a loaded machine's delays on top of the hold (with half
                // a second, a 2.4 s hold against a 3 s patience outlasted it once).
                let patience = *release_after + Duration::from_secs(1) >= timing.heartbeat * 3;
                run.link(client(c), LinkOp::AddHold { toxic, patience });
            }
            Fault::Lag { client: c, latency, .. } => {
                let half = (latency.as_millis() / 2) as u64;
                let toxic = Toxic::named(
                    format!("lag{i}"),
                    "latency",
                    Direction::Downstream,
                    &[("latency", half), ("jitter", half)],
                );
                run.link(client(c), LinkOp::Add(toxic));
            }
            Fault::Drop { client: c } => {
                let reset = Toxic::named(format!("drop{i}"), "reset_peer", Direction::Downstream, &[("timeout", 0)]);
                run.link(client(c), LinkOp::OneShot(reset));
            }
            Fault::DropAll => {
                for c in 0..plan.clients {
                    let reset =
                        Toxic::named(format!("drop{i}_{c}"), "reset_peer", Direction::Downstream, &[("timeout", 0)]);
                    run.link(c, LinkOp::OneShot(reset));
                }
            }
            Fault::Cut { client: c, after_bytes } => {
                run.link(client(c), LinkOp::Cut { name: format!("cut{i}"), after_bytes: *after_bytes });
            }
            Fault::Stall { client: c, duration } => {
                run.link(client(c), LinkOp::Stall(*duration, format!("stall{i}")));
            }
            Fault::Crash { .. } => {
                if slot.running() {
                    slot.crashed.push(slot.boot);
                    slot.frozen = None;
                    slot.crashes.push(origin.elapsed());
                    slot.server.signal(Signal::SIGKILL)?;
                    let status = slot.server.wait_exit(Duration::from_secs(5)).await?;
                    anyhow::ensure!(
                        std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
                        "the crash did not kill the server: {status}"
                    );
                    run.log(format_args!("boot {} killed", slot.boot));
                } else {
                    run.log("the server is down: nothing to kill");
                }
            }
            Fault::Restart { .. } | Fault::Move { .. } => {
                slot.server.signal(Signal::SIGTERM)?;
                signalled.insert(i, slot.boot);
                slot.signalled.push(slot.boot);
                if matches!(fault, Fault::Move { .. }) {
                    slot.moving = Some(slot.boot);
                } else {
                    slot.draining = Some(slot.boot);
                }
            }
            Fault::Freeze { .. } => {
                slot.server.signal(Signal::SIGSTOP)?;
                wait_state(&slot.server, |state| state == 'T').await?;
                slot.frozen = Some(slot.boot);
                run.log(format_args!("boot {} frozen (read back: stopped)", slot.boot));
            }
            Fault::Slicer { client: c, .. } => {
                let attributes = [("average_size", 8), ("size_variation", 7), ("delay", 1000)];
                let toxic = Toxic::named(format!("slicer{i}"), "slicer", Direction::Downstream, &attributes);
                run.link(client(c), LinkOp::Add(toxic));
            }
            Fault::Bandwidth { client: c, kbps, .. } => {
                let toxic =
                    Toxic::named(format!("bandwidth{i}"), "bandwidth", Direction::Downstream, &[("rate", *kbps)]);
                run.link(client(c), LinkOp::Add(toxic));
            }
            Fault::SlowClose { client: c, delay, .. } => {
                let delay = delay.as_millis() as u64;
                let toxic =
                    Toxic::named(format!("slow_close{i}"), "slow_close", Direction::Downstream, &[("delay", delay)]);
                run.link(client(c), LinkOp::Add(toxic));
            }
            Fault::Flood { connections, duration } => {
                let (run, addr, until) = (run.clone(), *service.borrow(), Instant::now() + *duration);
                let connections = *connections;
                attacks.push(Owned::spawn(async move {
                    let held = attacks::flood(addr, connections, until).await;
                    run.log(format_args!("flood of {connections}: {held}"));
                }));
            }
            Fault::Slowloris { connections } => {
                // As in the simulation: an attack on a server that is down or draining,
                // or that closes its listener within a header timeout, is not judged.
                let at = plan.faults[i].at;
                let closes_soon = plan.listener_disturbed(at, timing.header_timeout + attacks::SLOWLORIS_SLACK);
                let judged = slot.running() && slot.draining.is_none() && slot.moving.is_none() && !closes_soon;
                let allowed = timing.header_timeout + attacks::SLOWLORIS_SLACK;
                for n in 0..*connections {
                    let (run, addr) = (run.clone(), *service.borrow());
                    attacks.push(Owned::spawn(async move {
                        let held = attacks::trickle(addr, allowed + Duration::from_secs(3)).await;
                        match held {
                            Some(held) if held <= allowed => {}
                            _ if !judged => {}
                            held => run.fail(format!(
                                "slowloris connection {n} of fault {i} held {held:?}, header timeout {:?}",
                                timing.header_timeout
                            )),
                        }
                    }));
                }
                if !judged {
                    run.log("slowloris against a server that is down, draining or about to close: not judged");
                }
            }
            _ => unreachable!("cluster faults were skipped above"),
        }
    }

    for attack in attacks {
        let _ = attack.await;
    }
    // Every link's queued work done (each API call is bounded, so this is too).
    for c in 0..run.clients.len() {
        let (done, flushed) = oneshot::channel();
        run.link(c, LinkOp::Flush(done));
        let _ = flushed.await;
    }
    // Every client must be caught up within the bound after the last heal.
    let check_at = origin + calm_from + timing.catch_up_bound();
    for publisher in publishers {
        publisher.await.context("a publisher")?;
    }
    let acked = acked_live.lock().unwrap().clone();
    let mut forgotten = BTreeMap::new();
    if plan.store == StoreMode::Interval {
        // What a crash may take back: acknowledged since the last sync that completed
        // before it: the sync period, plus the fsync itself and the writer's wake-up,
        // which on a busy disk and a loaded machine take up to a second.
        for crash in &slot.crashes {
            let window =
                crash.saturating_sub(INTERVAL_SYNC + Duration::from_secs(1))..=*crash + Duration::from_millis(50);
            for a in acked.iter().filter(|a| window.contains(&a.at)) {
                forgotten.insert(a.id.clone(), calm_from);
            }
        }
    }
    // A client that left is owed what was acknowledged a little before it left (clients
    // leave only when their own faults are long over, so they are caught up then).
    let grace = observe::CAUGHT_UP_WITHIN * 2 + plan.max_latency;
    let judge = || judge_seats(&run.seats, origin, grace, &acked, &forgotten, calm_from);
    let (mut failures, recoveries) = verdict(judge, check_at, &timing).await;

    // Clients leave; the server must return to its baseline.
    let _ = stop_tx.send(true);
    drop(churn);
    seats.iter().for_each(Seat::close);
    let observed = observer.await.unwrap_or_default();
    if observed.max_buffered > budget {
        failures.push(format!("buffered bytes reached {}, over the windows' budget {budget}", observed.max_buffered));
    }
    let bound = timing.write_timeout + timing.heartbeat + Duration::from_secs(1);
    let deadline = Instant::now() + bound;
    let addr = slot.server.addr;
    let mut left;
    loop {
        left = Leftovers::read(addr, &slot.server).await;
        if left.settled(&baseline) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !left.settled(&baseline) {
        failures.push(format!("after clients left (bound {bound:?}): {left}, baseline {baseline}"));
    }
    // The plan's checks on the last boot's metrics, then the memory cgroup's.
    if !plan.expects.is_empty() {
        match tokio::time::timeout(Duration::from_secs(1), exposition(addr)).await {
            Ok(Ok(text)) => {
                let unmet = oracle::expectations(plan, &text, true);
                run.log(format_args!(
                    "{} of {} expect lines hold",
                    plan.expects.len() - unmet.len(),
                    plan.expects.len()
                ));
                failures.extend(unmet);
            }
            _ => failures.push("the server's /metrics did not answer for the expect lines".to_owned()),
        }
    }
    if let Some(group) = &slot.cgroup {
        let (peak, kills, limit) = (group.peak()?, group.oom_kills()?, group.limit()?);
        run.log(format_args!("memory cgroup: peak {} MiB of {} MiB, {kills} OOM kills", peak >> 20, limit >> 20));
        if kills > 0 || peak >= limit {
            failures.push(format!("memory cgroup: peak {peak} of {limit} bytes, {kills} OOM kills"));
        }
    }
    failures.extend(run.failures.lock().unwrap().drain(..));
    let trace = std::mem::take(&mut *run.trace.lock().unwrap());
    Ok(RealOutcome {
        seed,
        failures,
        trace,
        recoveries,
        acked: acked.len(),
        took: origin.elapsed(),
        observed,
        client_topics: topics,
        connects: seats.iter().map(Seat::connects).collect(),
        deliveries: deliveries(&run.seats, origin, grace, &acked),
        calm_from,
    })
}

/// Every event every client received, with its delay from the publish.
pub(super) fn deliveries(
    seats: &[Seat],
    origin: Instant,
    grace: Duration,
    acked: &[Acked],
) -> Vec<(Duration, Duration)> {
    let sent: BTreeMap<&str, Duration> = acked.iter().map(|a| (a.data.as_str(), a.sent)).collect();
    let mut out = Vec::new();
    for seat in seats {
        for tenant in seat.tenants(origin, grace) {
            for seen in tenant.record.lock().unwrap().seen(origin) {
                if let sse_plan::record::Seen::Event(event) = seen {
                    if let Some(sent) = sent.get(event.data.as_str()) {
                        out.push((event.at, event.at.saturating_sub(*sent)));
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// Judges every client of every seat against the acknowledgements, as the oracle does for
/// the simulation: the failures, and per seat the longest recovery of a client that
/// stayed.
pub(super) fn judge_seats(
    seats: &[Seat],
    origin: Instant,
    grace: Duration,
    acked: &[Acked],
    forgotten: &BTreeMap<String, Duration>,
    calm_from: Duration,
) -> (Vec<String>, Vec<Duration>) {
    let mut failures = oracle::reused_ids(acked);
    let mut recoveries = Vec::new();
    for (i, seat) in seats.iter().enumerate() {
        let mut recovery = Duration::ZERO;
        for (k, tenant) in seat.tenants(origin, grace).iter().enumerate() {
            let name = if k == 0 { format!("client-{i}") } else { format!("client-{i}.{k}") };
            if tenant.presence.from.is_none() {
                failures.push(format!("{name} (joined at {:?}) never got a stream's opening position", tenant.joined));
                continue;
            }
            let seen = tenant.record.lock().unwrap().seen(origin);
            // Acknowledged before it subscribed (less a margin): not its business.
            let first = acked.partition_point(|a| a.at + JOIN_MARGIN < tenant.joined);
            let report = oracle::judge_present(
                &name,
                &seat.topics,
                &tenant.presence,
                &seen,
                &acked[first..],
                forgotten,
                calm_from,
            );
            failures.extend(report.failures);
            if tenant.stayed {
                recovery = recovery.max(report.recovery);
            }
        }
        recoveries.push(recovery);
    }
    (failures, recoveries)
}

/// Judges until every client is caught up or `check_at` passes; caught up early, the
/// clients keep running a little longer (a reconnect already on its way lands in it) and
/// the oracle looks again, so a late duplicate or a replay out of order is still seen.
pub(super) async fn verdict(
    judge: impl Fn() -> (Vec<String>, Vec<Duration>),
    check_at: Instant,
    timing: &Timing,
) -> (Vec<String>, Vec<Duration>) {
    let (mut failures, mut recoveries) = judge();
    while !failures.is_empty() && Instant::now() < check_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (failures, recoveries) = judge();
    }
    let settle = (Instant::now() + timing.retry + timing.retry_jitter + timing.heartbeat).min(check_at);
    if failures.is_empty() {
        tokio::time::sleep_until(settle).await;
        (failures, recoveries) = judge();
    }
    (failures, recoveries)
}

/// What a server holds that clients leaving must give back: streams, their topic
/// registrations, connections (less the scrape's own), descriptors and tokio tasks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Leftovers {
    streams: f64,
    subscriptions: f64,
    connections: f64,
    fds: usize,
    tasks: f64,
}

impl Leftovers {
    /// Reads them from one `/metrics` answer (a value the server did not give within a
    /// second reads as -1, or as `usize::MAX` descriptors).
    pub(super) async fn read(addr: SocketAddr, server: &ServerProcess) -> Leftovers {
        let text = tokio::time::timeout(Duration::from_secs(1), exposition(addr)).await.ok().and_then(Result::ok);
        let read = |name: &str| text.as_deref().and_then(|t| metric_value(t, name)).unwrap_or(-1.0);
        Leftovers {
            streams: read("sse_streams"),
            subscriptions: read("sse_subscriptions"),
            connections: read("sse_connections") - 1.0,
            fds: server.open_fds().unwrap_or(usize::MAX),
            tasks: read("tokio_alive_tasks"),
        }
    }

    /// The baseline a run is judged against: read until every value is there (a scrape
    /// that missed its second on a loaded machine would make the baseline unreachable),
    /// for 10 s at most.
    pub(super) async fn baseline(addr: SocketAddr, server: &ServerProcess) -> Leftovers {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let read = Leftovers::read(addr, server).await;
            if read.is_complete() || Instant::now() > deadline {
                return read;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn is_complete(&self) -> bool {
        [self.streams, self.subscriptions, self.tasks].iter().all(|v| *v >= 0.0)
            && self.connections >= -1.0
            && self.fds != usize::MAX
    }

    /// No streams, topic registrations or connections (but the scrape's).
    pub(super) fn holds_nothing(&self) -> bool {
        self.streams == 0.0 && self.subscriptions == 0.0 && self.connections <= 0.0
    }

    /// Back to `baseline` (one descriptor and one task of slack: the scrape's).
    pub(super) fn settled(&self, baseline: &Leftovers) -> bool {
        self.streams == 0.0
            && self.subscriptions == 0.0
            && self.connections <= 0.0
            && self.fds <= baseline.fds + 1
            && self.tasks >= 0.0
            && self.tasks <= baseline.tasks + 1.0
    }
}

impl std::fmt::Display for Leftovers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Leftovers { streams, subscriptions, connections, fds, tasks } = self;
        write!(
            f,
            "{streams} streams, {subscriptions} subscriptions, {connections} connections, {fds} fds, {tasks} tasks"
        )
    }
}

/// Waits (bounded) until the process's state letter in `/proc/PID/stat` satisfies `ok`:
/// a signal that stops or continues the server is read back before it counts.
async fn wait_state(server: &ServerProcess, ok: impl Fn(char) -> bool) -> anyhow::Result<()> {
    super::processes::wait_pid_state(server.pid(), ok).await
}

/// Records a failure unless `boot`, which a restart or move signalled, exited 0 by the
/// heal (a crash of that boot meanwhile excuses it).
fn check_drained(run: &Run, slot: &mut Slot, boot: u32, fault: &Fault) {
    slot.note_exit();
    if slot.crashed.contains(&boot) {
        run.log("restart check skipped: the signalled boot crashed");
    } else if !slot.drained.contains(&boot) {
        run.fail(format!("graceful shutdown had not finished {:?} after the signal", fault.duration()));
    }
    if slot.draining == Some(boot) {
        slot.draining = None;
    }
}
