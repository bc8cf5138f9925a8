//! Runs one seed and one plan: the unmodified server on host `server`, subscribers on the
//! shared host (through a [`crate::link::Link`] when a link fault names them), a publisher, faults applied between simulation
//! steps, then the oracle.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sse_server::metrics::Metrics;
use sse_server::rng::SeededRng;
use sse_server::store::{FsyncPolicy, MemoryStore};
use sse_server::stream::pacing::Coalesce;
use sse_server::{Config, Server};
use tokio::sync::watch;

use crate::link::Link;
use crate::placement::{self, Placement};
use crate::publisher::{self, Acked, PublisherConfig};
use crate::service::ServiceAddress;
use crate::sim_listener::SimListener;
use crate::subscriber::{self, SubscriberConfig, SubscriberState};
use crate::trace::Trace;
use crate::SERVER_PORT;
use crate::{flood, slowloris};
use sse_plan::oracle;
use sse_plan::{Fault, Plan, Reach, StoreMode, TimedFault, Timing};

const SERVER: &str = "server";
/// The second server host, where the service moves.
const STANDBY: &str = "server-b";

/// The server configuration every simulation uses (short timeouts keep runs short).
pub fn server_config(plan: &Plan, seed: u64, epoch: u32) -> Config {
    let timing = Timing::PLANS;
    Config {
        heartbeat: timing.heartbeat,
        retry: timing.retry,
        retry_jitter: timing.retry_jitter,
        write_timeout: timing.write_timeout,
        header_timeout: timing.header_timeout,
        drain_timeout: timing.drain_timeout,
        window: plan.window,
        coalesce: match plan.coalesce_auto {
            true => Coalesce::Auto { budget: Duration::ZERO },
            false => Coalesce::Fixed(Duration::from_millis(plan.coalesce_ms)),
        },
        coalesce_budget: Duration::from_millis(plan.coalesce_ms.max(1)),
        max_connections: Some(2 * placement::MAX_CLIENTS),
        seed: Some(seed),
        epoch: Some(epoch),
        max_buffered_bytes: plan.max_buffered_kb.map_or(Config::default().max_buffered_bytes, |kb| kb as usize * 1024),
        ..Config::default()
    }
}

/// How long after the last fault heals every client must have caught up ([`Timing::catch_up_bound`]).
pub fn catch_up_bound(config: &Config) -> Duration {
    let Config { heartbeat, retry, retry_jitter, write_timeout, header_timeout, drain_timeout, .. } = *config;
    Timing { heartbeat, retry, retry_jitter, write_timeout, header_timeout, drain_timeout }.catch_up_bound()
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub trace: Trace,
    pub failures: Vec<String>,
    /// Per client, time from the last heal to caught up.
    pub recoveries: Vec<Duration>,
    pub acked: usize,
    pub simulated: Duration,
    /// Plan items the simulation cannot apply (real-only ones), and why.
    pub skipped: Vec<String>,
}

/// Shared view of the server host, across restarts.
#[derive(Default)]
struct ServerView {
    metrics: RefCell<Option<Arc<Metrics>>>,
    hub: RefCell<Option<Arc<sse_server::stream::hub::Hub>>>,
    alive_tasks: Cell<usize>,
    /// Tasks alive on the first sample after the first boot: the baseline.
    baseline_tasks: Cell<Option<usize>>,
    boots: Cell<u32>,
    /// Boots that finished a graceful drain.
    drained: RefCell<BTreeSet<u32>>,
}

/// tokio numbers tasks from one counter for the whole process, and a crashed host's
/// tasks are torn down in an order that follows those numbers (modulo the runtime's
/// shard count: 4 for turmoil's current-thread runtimes), which decides the order in
/// which its peers see their connections reset. Moving the counter to a multiple of 64
/// before each run makes a trace depend on the seed alone, not on what the process ran
/// before (other runs of a swarm, or of a test). Runs on other threads of the same
/// process at the same moment can still move it.
fn align_task_ids() {
    const ALIGN: u64 = 64;
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else { return };
    for _ in 0..ALIGN {
        let id = runtime.spawn(async {}).id().to_string().parse::<u64>().unwrap_or(ALIGN - 1);
        if id % ALIGN == ALIGN - 1 {
            break;
        }
    }
}

/// Runs `plan` under `seed`.
pub fn run(seed: u64, plan: &Plan, trace: Trace) -> Outcome {
    align_task_ids();
    let _server_log = crate::server_log::capture(&trace);
    // A plan with more clients than the simulation can run says so.
    let mut resized = Vec::new();
    let capped;
    let limit = placement::client_limit(plan);
    let plan = if plan.clients > limit {
        resized.push(format!("clients {}: the simulation runs {limit}", plan.clients));
        capped = Plan { clients: limit, ..plan.clone() };
        &capped
    } else {
        plan
    };
    let placement = Placement::new(plan);
    let rng = SeededRng::new(seed);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(3600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(placement.link_latency())
        .tcp_capacity(64)
        .build();
    let view = Rc::new(ServerView::default());
    let config = server_config(plan, seed, 0);
    // A store that outlives boots, for the durable and interval modes.
    let kept_epoch = SeededRng::new(seed ^ 0x5707e).next_u64() as u32;
    let kept_store = match plan.store {
        StoreMode::Fresh => None,
        StoreMode::Durable => Some(FsyncPolicy::Always),
        StoreMode::Interval => Some(FsyncPolicy::Interval(Duration::from_millis(200))),
    }
    .map(|policy| MemoryStore::new(kept_epoch, config.window.max(1), config.window_bytes, policy));
    // Ids a power cut took back, and when the server was back up after it.
    let forgotten: Rc<RefCell<BTreeMap<String, Duration>>> = Rc::default();
    // Bumped for each graceful restart; a boot drains when it changes.
    let (restart_tx, restart_rx) = watch::channel(0u32);
    // The host allowed to run the server (one at a time: they share the store), and the
    // address clients use (repointed as soon as a move starts).
    let active = Rc::new(Cell::new(SERVER));
    let address = ServiceAddress::new(SERVER);
    for host in [SERVER, STANDBY] {
        let (view, plan, trace, kept_store) = (view.clone(), plan.clone(), trace.clone(), kept_store.clone());
        let (active, restart_rx) = (active.clone(), restart_rx.clone());
        sim.host(host, move || {
            let (view, plan, trace, kept_store) = (view.clone(), plan.clone(), trace.clone(), kept_store.clone());
            let (active, mut restart) = (active.clone(), restart_rx.clone());
            async move {
                // A standby host waits until the service moves to it.
                while active.get() != host {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                restart.mark_unchanged();
                let boot = view.boots.get() + 1;
                view.boots.set(boot);
                // A fresh store per boot is a new history; a kept one carries on.
                let epoch = SeededRng::new(seed ^ u64::from(boot).wrapping_mul(0x9e37_79b9)).next_u64() as u32;
                let config = server_config(&plan, seed.wrapping_add(u64::from(boot)), epoch);
                let server = match kept_store {
                    None => Server::new(config),
                    Some(store) => Server::with_store(config, Arc::new(store)),
                };
                let epoch = server.hub().epoch();
                *view.metrics.borrow_mut() = Some(server.metrics());
                *view.hub.borrow_mut() = Some(server.hub());
                trace.here(host, format_args!("boot {boot} epoch {epoch:08x}"));
                let sampler_view = view.clone();
                tokio::task::spawn_local(async move {
                    loop {
                        let alive = tokio::runtime::Handle::current().metrics().num_alive_tasks();
                        sampler_view.alive_tasks.set(alive);
                        if sampler_view.baseline_tasks.get().is_none() {
                            sampler_view.baseline_tasks.set(Some(alive));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", SERVER_PORT)).await?;
                server
                    .run(SimListener(listener), async move {
                        let _ = restart.changed().await;
                    })
                    .await?;
                trace.here(host, format_args!("boot {boot} drained"));
                view.drained.borrow_mut().insert(boot);
                Ok(())
            }
        });
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let topic_names = plan.topic_names();
    let stagger = Duration::from_millis(5).min(Duration::from_millis(500) / plan.clients.max(1) as u32);
    let mut clients = Vec::new();
    let mut subscribers = Vec::new();
    for (i, topics) in plan.client_topics(&rng).into_iter().enumerate() {
        // A client a link fault names goes through a link of its own, its lag seeded apart.
        let link =
            placement.linked(i).then(|| Rc::new(Link::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))));
        let state = Rc::new(SubscriberState { link, ..SubscriberState::default() });
        let name = format!("client-{i}");
        let config = SubscriberConfig {
            name: name.clone(),
            server: address.clone(),
            topics: topics.iter().cloned().collect(),
            heartbeat: config.heartbeat,
            // Staggered, 5 ms apart or closer, all connected within half a second (before
            // publishing starts).
            start_after: stagger * i as u32,
        };
        subscribers.push(subscriber::run(config, state.clone(), trace.clone(), stop_rx.clone()));
        clients.push((name, topics, state));
    }
    if !subscribers.is_empty() {
        sim.client(placement::SHARED, subscriber::run_all(subscribers));
    }
    let acked: Rc<RefCell<Vec<Acked>>> = Rc::default();
    let publisher = PublisherConfig {
        server: address.clone(),
        topics: topic_names,
        start: Duration::from_secs(1),
        stop: plan.publish_until(),
        interval: plan.publish_every,
        seed: rng.next_u64(),
        padding: plan.padding(),
    };
    sim.client("publisher", publisher::run(publisher, acked.clone(), trace.clone()));
    let attacks: Vec<(Duration, usize)> = plan
        .faults
        .iter()
        .filter_map(|f| match f.fault {
            Fault::Slowloris { connections } => Some((f.at, connections)),
            _ => None,
        })
        .collect();
    let held: slowloris::Held = Rc::default();
    if !attacks.is_empty() {
        let mut attacks = attacks;
        attacks.sort();
        sim.client("slowloris", slowloris::run(address.clone(), attacks, held.clone(), trace.clone()));
    }

    let mut floods: Vec<flood::Flood> = plan
        .faults
        .iter()
        .filter_map(|f| match f.fault {
            Fault::Flood { connections, duration } => Some((f.at, connections, duration)),
            _ => None,
        })
        .collect();
    if !floods.is_empty() {
        floods.sort();
        sim.client("flood", flood::run(address.clone(), floods, trace.clone()));
    }

    let mut failures = Vec::new();
    let calm_from = plan.calm_from();
    let check_at = calm_from + catch_up_bound(&config);
    let mut pending: Vec<TimedFault> = plan.faults.clone();
    pending.sort_by_key(|f| f.at);
    // Each pending heal remembers which boot of the server, on which host, its fault hit.
    let mut heals: Vec<(Duration, Fault, u32, &'static str)> = Vec::new();
    // Boots a crash ended.
    let mut crashed = BTreeSet::new();
    // A move in progress: (to, from).
    let mut moving: Option<(&'static str, &'static str)> = None;
    let mut step_error = None;
    let mut attacks_while_down = BTreeSet::new();
    // The boot that was told to shut down: it stopped accepting.
    let mut draining_boot = None;
    let mut frozen_until = Duration::ZERO;
    let mut links = HeldLinks::default();
    let mut skipped = resized;
    skipped.extend(plan.real_only_settings().into_iter().map(|s| format!("{s}: real only")));
    skipped.extend(plan.expects.iter().filter(|e| e.real_only).map(|e| format!("{e}: real only")));
    for item in &skipped {
        trace.log(Duration::ZERO, "harness", format_args!("skipped {item}"));
    }
    while sim.elapsed() < check_at {
        let now = sim.elapsed();
        if let Some((to, from)) = moving.filter(|(_, from)| !sim.is_host_running(*from)) {
            active.set(to);
            if !sim.is_host_running(to) {
                sim.bounce(to);
            }
            trace.log(now, "fault", format_args!("{from} drained: the service moves to {to}"));
            moving = None;
        }
        while pending.first().is_some_and(|f| f.at <= now) {
            let fault = pending.remove(0);
            let host = active.get();
            trace.log(now, "fault", format_args!("{:?}", fault.fault));
            if fault.fault.reach() == Reach::RealOnly {
                trace.log(now, "fault", "skipped: only a real run can apply it");
                skipped.push(format!("{:?} at {:?}: real only", fault.fault, fault.at));
                continue;
            }
            if let Fault::Freeze { .. } = fault.fault {
                // As for real: a server that is down, draining, moving or frozen is not
                // frozen again, and the skipped freeze has nothing to heal.
                let draining = draining_boot == Some(view.boots.get());
                if !sim.is_host_running(host) || moving.is_some() || draining || frozen_until > now {
                    trace.log(now, "fault", "freeze skipped: the server is down, draining, moving or frozen");
                    continue;
                }
                frozen_until = fault.heals_at();
            }
            if matches!(fault.fault, Fault::Restart { .. } | Fault::Move { .. }) {
                // Like SIGTERM to a dead process: a server that is down cannot drain; a
                // frozen one acts on nothing until it thaws.
                if !sim.is_host_running(host) || moving.is_some() || frozen_until > now {
                    trace.log(now, "fault", "restart skipped: the server is down, moving or frozen");
                    continue;
                }
                restart_tx.send_modify(|generation| *generation += 1);
                draining_boot = Some(view.boots.get());
                if matches!(fault.fault, Fault::Move { .. }) {
                    let to = if host == SERVER { STANDBY } else { SERVER };
                    address.set(to);
                    moving = Some((to, host));
                }
            }
            // Connections the listener has not accepted when it closes for a graceful
            // restart hang in turmoil until the host restarts (a real kernel resets
            // them), so an attack that starts within a header timeout of one is not judged.
            let closes_soon = plan.listener_disturbed(fault.at, config.header_timeout);
            let accepting = sim.is_host_running(address.host())
                && active.get() == address.host()
                && draining_boot != Some(view.boots.get())
                && !closes_soon;
            if matches!(fault.fault, Fault::Slowloris { .. }) && !accepting {
                trace.log(now, "fault", "slowloris against a server that is down or draining: not judged");
                attacks_while_down.insert(fault.at);
            }
            if matches!(fault.fault, Fault::Crash { .. }) && sim.is_host_running(host) {
                crashed.insert(view.boots.get());
            }
            apply(&mut sim, &mut links, host, &fault.fault, &clients, now);
            if let (Fault::Crash { .. }, Some(store)) = (&fault.fault, &kept_store) {
                let lost = store.crash();
                trace.log(now, "fault", format_args!("power cut: the store forgot {} unsynced events", lost.len()));
                // Acknowledgements of them can still be on the wire; none can come from a
                // later boot before the server is back.
                let back = fault.heals_at();
                forgotten.borrow_mut().extend(lost.iter().map(|seq| (format!("{kept_epoch:08x}-{seq}"), back)));
            }
            heals.push((fault.heals_at(), fault.fault, view.boots.get(), host));
        }
        heals.retain(|(at, fault, boot, host)| {
            if *at > now {
                return true;
            }
            if matches!(fault, Fault::Restart { .. } | Fault::Move { .. }) {
                if crashed.contains(boot) {
                    // The signalled boot crashed meanwhile; the crash brings it back.
                    trace.log(now, "fault", "restart check skipped: the signalled boot crashed");
                    return false;
                }
                if !view.drained.borrow().contains(boot) {
                    failures
                        .push(format!("graceful shutdown had not finished {:?} after the signal", fault.duration()));
                }
            }
            heal(&mut sim, &mut links, host, fault, &clients, &trace, now);
            false
        });
        if let Err(error) = sim.step() {
            step_error = Some(error.to_string());
            break;
        }
        if let Some(metrics) = view.metrics.borrow().as_ref() {
            let budget = plan.buffer_budget().min(config.max_buffered_bytes) as i64;
            if metrics.buffered_bytes() > budget && failures.is_empty() {
                failures
                    .push(format!("buffered bytes {} over the budget {budget} at {now:?}", metrics.buffered_bytes()));
            }
        }
    }
    if let Some(error) = step_error {
        failures.push(format!("a host failed: {error}"));
    }
    // Slowloris connections are closed by the header timeout (a crash closes them sooner).
    // An attack made while the server was down or draining (its listener closed) reached
    // no server: not judged.
    let allowed = config.header_timeout + Duration::from_millis(100);
    for (n, (start, held)) in held.borrow().iter().enumerate() {
        match held {
            _ if attacks_while_down.contains(start) => {}
            Some(held) if *held <= allowed => {}
            _ => failures
                .push(format!("slowloris connection {n} held {held:?}, header timeout {:?}", config.header_timeout)),
        }
    }
    let acked = acked.borrow().clone();
    failures.extend(oracle::reused_ids(&acked));
    let mut recoveries = Vec::new();
    for (name, topics, state) in &clients {
        let report = oracle::judge(name, topics, &state.seen.borrow(), &acked, &forgotten.borrow(), calm_from);
        failures.extend(report.failures);
        recoveries.push(report.recovery);
    }
    // Clients leave; the server must return to its baseline.
    let _ = stop_tx.send(true);
    let leave_by = sim.elapsed() + config.write_timeout + config.heartbeat + Duration::from_secs(1);
    let settled = |view: &ServerView| {
        view.metrics.borrow().as_ref().is_some_and(|m| m.streams() == 0 && m.connections() == 0)
            && Some(view.alive_tasks.get()) <= view.baseline_tasks.get()
            && view.hub.borrow().as_ref().is_some_and(|hub| hub.registrations() == 0)
    };
    while sim.elapsed() < leave_by && !settled(&view) {
        if sim.step().is_err() {
            break;
        }
    }
    if let Some(hub) = view.hub.borrow().as_ref().filter(|hub| hub.registrations() != 0) {
        failures.push(format!("after clients left: {} stream registrations left in the hub", hub.registrations()));
    }
    if Some(view.alive_tasks.get()) > view.baseline_tasks.get() {
        failures.push(format!(
            "after clients left: {} tasks alive on the server host, baseline {:?}",
            view.alive_tasks.get(),
            view.baseline_tasks.get()
        ));
    }
    if let Some(metrics) = view.metrics.borrow().as_ref() {
        if metrics.streams() != 0 || metrics.connections() != 0 {
            failures.push(format!(
                "after clients left: {} streams and {} connections still open at {:?}",
                metrics.streams(),
                metrics.connections(),
                sim.elapsed()
            ));
        }
    }
    // The plan's checks on the last boot's metrics.
    if let Some(metrics) = view.metrics.borrow().as_ref() {
        failures.extend(oracle::expectations(plan, &metrics.render(), false));
    }
    trace.log(sim.elapsed(), "harness", format_args!("done: {} acked, {} failures", acked.len(), failures.len()));
    Outcome { seed, trace, failures, recoveries, acked: acked.len(), simulated: sim.elapsed(), skipped }
}

/// Links held by hold and freeze faults, counted, so that one fault's heal never
/// releases a link another still holds.
#[derive(Default)]
struct HeldLinks(BTreeMap<(String, String), u32>);

impl HeldLinks {
    fn hold(&mut self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
        let holds = self.0.entry((a.to_owned(), b.to_owned())).or_default();
        if *holds == 0 {
            sim.hold(a, b);
        }
        *holds += 1;
    }

    fn release(&mut self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
        let key = (a.to_owned(), b.to_owned());
        if let Some(holds) = self.0.get_mut(&key) {
            *holds -= 1;
            if *holds == 0 {
                self.0.remove(&key);
                sim.release(a, b);
            }
        }
    }
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    links: &mut HeldLinks,
    host: &str,
    fault: &Fault,
    clients: &[(String, BTreeSet<String>, Rc<SubscriberState>)],
    now: Duration,
) {
    let client = |i: &usize| &clients[*i % clients.len()];
    match fault {
        Fault::Partition { client: i, .. } => link(clients, *i).partition(),
        Fault::Hold { client: i, .. } => link(clients, *i).hold(),
        Fault::Lag { client: i, latency, .. } => link(clients, *i).set_lag(*latency),
        Fault::Crash { .. } => sim.crash(host),
        Fault::Restart { .. } | Fault::Move { .. } => {}
        Fault::Drop { client: i } => client(i).2.drop_now.set(true),
        Fault::DropAll => clients.iter().for_each(|c| c.2.drop_now.set(true)),
        Fault::Stall { client: i, duration } => client(i).2.stall_until.set(now + *duration),
        Fault::Slowloris { .. } => {}
        Fault::Cut { client: i, after_bytes } => client(i).2.cut_after.set(Some(*after_bytes)),
        // A frozen server: nothing it sends or is sent moves until it thaws.
        Fault::Freeze { .. } => {
            links.hold(sim, host, placement::SHARED);
            links.hold(sim, host, "publisher");
        }
        Fault::Flood { .. } => {}
        Fault::Slicer { .. } | Fault::Bandwidth { .. } | Fault::SlowClose { .. } => {
            unreachable!("real-only faults are skipped before apply")
        }
        cluster if cluster.is_cluster() => unreachable!("cluster faults are real only, skipped before apply"),
        _ => unreachable!("every fault is matched above"),
    }
}

/// The link of client `i` (wrapping around), which [`Placement::linked`] gave it.
fn link(clients: &[(String, BTreeSet<String>, Rc<SubscriberState>)], i: usize) -> &Link {
    clients[i % clients.len()].2.link.as_deref().expect("a client a link fault names has a link")
}

fn heal(
    sim: &mut turmoil::Sim<'_>,
    links: &mut HeldLinks,
    host: &str,
    fault: &Fault,
    clients: &[(String, BTreeSet<String>, Rc<SubscriberState>)],
    trace: &Trace,
    now: Duration,
) {
    match fault {
        Fault::Partition { client: i, .. } => link(clients, *i).repair(),
        Fault::Hold { client: i, .. } => link(clients, *i).release(),
        Fault::Lag { client: i, .. } => link(clients, *i).set_lag(Duration::ZERO),
        // One server process per host: a heal starts it if nothing runs there. When faults
        // overlap (a crash of a server already down after a restart, two restarts), the
        // first heal starts it and the later ones find it running and leave it alone; a
        // heal never kills a server another heal started.
        Fault::Crash { .. } | Fault::Restart { .. } if sim.is_host_running(host) => {
            trace.log(now, "fault", format_args!("healed {fault:?}: the server already runs, nothing to start"));
            return;
        }
        Fault::Crash { .. } | Fault::Restart { .. } => sim.bounce(host),
        Fault::Freeze { .. } => {
            links.release(sim, host, placement::SHARED);
            links.release(sim, host, "publisher");
        }
        Fault::Slicer { .. } | Fault::Bandwidth { .. } | Fault::SlowClose { .. } | Fault::Flood { .. } => return,
        // The old host stays down; the service already runs on the other one.
        Fault::Move { .. } => {}
        Fault::Drop { .. } | Fault::DropAll | Fault::Stall { .. } | Fault::Slowloris { .. } | Fault::Cut { .. } => {
            return
        }
        // Cluster faults are real only: skipped, nothing to heal.
        _ => return,
    }
    trace.log(now, "fault", format_args!("healed {fault:?}"));
}
