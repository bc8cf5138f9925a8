//! A fault plan: the run's shape (clients, topics, window, publishing) and a list of
//! timed faults. Plans are data: generated from a seed, shrunk by proptest, stored in
//! `fixtures/` as text, one item per line.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sse_server::rng::SeededRng;

/// One fault from the vocabulary, applied at a simulated time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cut the link between the server and a client both ways (a half-open stream).
    Partition { client: usize, heal_after: Duration },
    /// Hold every message on the link, then deliver them all (a stall, then a burst).
    Hold { client: usize, release_after: Duration },
    /// Crash the server and start it again (what survives depends on the plan's store).
    Crash { restart_after: Duration },
    /// Shut the server down gracefully (SIGTERM); it must have drained within
    /// `restart_after`, when it is started again.
    Restart { restart_after: Duration },
    /// Shut the server down gracefully and bring the service up on the second host
    /// (`server-b`, same store) once it has drained; clients and the publisher follow the
    /// service's address. It must have drained within `restart_after`.
    Move { restart_after: Duration },
    /// Raise the latency bound of one client's link (a latency spike: messages take up to
    /// `latency`), then restore the plan's bound.
    Lag { client: usize, latency: Duration, duration: Duration },
    /// A client drops its connection abruptly and reconnects.
    Drop { client: usize },
    /// Every client drops at once (a disconnect storm).
    DropAll,
    /// A client stops reading for a while (a slow consumer).
    Stall { client: usize, duration: Duration },
    /// Connections that send part of a request head and trickle the rest.
    Slowloris { connections: usize },
    /// The link to one client closes after `after_bytes` more bytes reach it (once): a
    /// stream cut inside its opening lines, inside a replay or inside live events.
    Cut { client: usize, after_bytes: usize },
    /// The server freezes (SIGSTOP, then SIGCONT; simulated: every link of the server
    /// held, then released). A restart or move of a frozen server is skipped: it cannot
    /// act on a signal until it thaws.
    Freeze { duration: Duration },
    /// Real only: one client's stream arrives in pieces of 1 to 15 bytes, 1 ms apart
    /// (Toxiproxy `slicer`); turmoil delivers what was written whole.
    Slicer { client: usize, duration: Duration },
    /// Real only: one client's link limited to `kbps` KB/s (Toxiproxy `bandwidth`);
    /// turmoil has no per-link rate.
    Bandwidth { client: usize, kbps: u64, duration: Duration },
    /// Real only: connections on one client's link close `delay` late (Toxiproxy
    /// `slow_close`) for `duration`; turmoil closes at once.
    SlowClose { client: usize, delay: Duration, duration: Duration },
    /// `connections` stream requests opened at once and held for `duration` (with the
    /// plan's `nofile`, a flood past the open-file limit), then dropped.
    Flood { connections: usize, duration: Duration },
    /// Cluster only: SIGKILL one `sse-server` node (modulo the plan's nodes), start it
    /// again after `restart_after`; its clients follow the service to a live node.
    KillNode { node: usize, restart_after: Duration },
    /// Cluster only: SIGSTOP one node for `duration`, then SIGCONT; its clients follow
    /// the service to a live node as a load balancer's health check would send them.
    PauseNode { node: usize, duration: Duration },
    /// Cluster only: SIGKILL the NATS node that leads the stream's Raft group (found from
    /// its monitoring), start it again after `restart_after`.
    KillLeader { restart_after: Duration },
    /// Cluster only: SIGSTOP one NATS node (modulo 3) for `duration`, then SIGCONT.
    PauseNats { node: usize, duration: Duration },
    /// Cluster only: cut one `sse-server` node from every NATS node for `heal_after`
    /// (its Toxiproxy links to NATS disabled); it keeps its clients.
    Isolate { node: usize, heal_after: Duration },
    /// Cluster only: SIGKILL every NATS node, start them again after `restart_after`.
    RestartNats { restart_after: Duration },
}

/// Which backends can apply a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The simulation and the real run.
    Both,
    /// Only the real run (a real kernel, Toxiproxy); the simulation lists it as skipped.
    RealOnly,
}

/// What the server's store keeps across a crash or restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// A new in-memory store per boot: every crash or restart starts a new history.
    Fresh,
    /// One store across boots, synced before each acknowledgement (`--fsync always`):
    /// nothing acknowledged is lost, ids and the epoch carry on.
    Durable,
    /// One store across boots, synced every 200 ms (`--fsync interval:200ms`): a crash
    /// forgets what was not synced yet, as a power cut would.
    Interval,
}

impl StoreMode {
    fn as_str(self) -> &'static str {
        match self {
            StoreMode::Fresh => "fresh",
            StoreMode::Durable => "durable",
            StoreMode::Interval => "interval",
        }
    }
}

/// A fault and when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedFault {
    pub at: Duration,
    pub fault: Fault,
}

impl Fault {
    /// How long the fault lasts (zero for one-shot faults).
    pub fn duration(&self) -> Duration {
        match *self {
            Fault::Partition { heal_after, .. } => heal_after,
            Fault::Hold { release_after, .. } => release_after,
            Fault::Crash { restart_after } | Fault::Restart { restart_after } | Fault::Move { restart_after } => {
                restart_after
            }
            Fault::Stall { duration, .. }
            | Fault::Lag { duration, .. }
            | Fault::Freeze { duration }
            | Fault::Slicer { duration, .. }
            | Fault::Bandwidth { duration, .. }
            | Fault::SlowClose { duration, .. }
            | Fault::Flood { duration, .. }
            | Fault::PauseNode { duration, .. }
            | Fault::PauseNats { duration, .. } => duration,
            Fault::KillNode { restart_after, .. }
            | Fault::KillLeader { restart_after }
            | Fault::RestartNats { restart_after } => restart_after,
            Fault::Isolate { heal_after, .. } => heal_after,
            Fault::Drop { .. } | Fault::DropAll | Fault::Slowloris { .. } | Fault::Cut { .. } => Duration::ZERO,
        }
    }

    /// Its name, as the text form writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::Hold { .. } => "hold",
            Fault::Crash { .. } => "crash",
            Fault::Restart { .. } => "restart",
            Fault::Move { .. } => "move",
            Fault::Lag { .. } => "lag",
            Fault::Drop { .. } => "drop",
            Fault::DropAll => "drop_all",
            Fault::Stall { .. } => "stall",
            Fault::Slowloris { .. } => "slowloris",
            Fault::Cut { .. } => "cut",
            Fault::Freeze { .. } => "freeze",
            Fault::Slicer { .. } => "slicer",
            Fault::Bandwidth { .. } => "bandwidth",
            Fault::SlowClose { .. } => "slow_close",
            Fault::Flood { .. } => "flood",
            Fault::KillNode { .. } => "kill_node",
            Fault::PauseNode { .. } => "pause_node",
            Fault::KillLeader { .. } => "kill_leader",
            Fault::PauseNats { .. } => "pause_nats",
            Fault::Isolate { .. } => "isolate",
            Fault::RestartNats { .. } => "restart_nats",
        }
    }

    /// The clients whose link it acts on: `Some(Some(i))` one client, `Some(None)` every
    /// client, `None` the server rather than a link (a crash, a freeze, slowloris, …).
    pub fn link(&self) -> Option<Option<usize>> {
        match self {
            Fault::Partition { client, .. }
            | Fault::Hold { client, .. }
            | Fault::Lag { client, .. }
            | Fault::Drop { client }
            | Fault::Stall { client, .. }
            | Fault::Cut { client, .. }
            | Fault::Slicer { client, .. }
            | Fault::Bandwidth { client, .. }
            | Fault::SlowClose { client, .. } => Some(Some(*client)),
            Fault::DropAll => Some(None),
            _ => None,
        }
    }

    /// Which backends can apply it.
    pub fn reach(&self) -> Reach {
        match self {
            Fault::Slicer { .. } | Fault::Bandwidth { .. } | Fault::SlowClose { .. } => Reach::RealOnly,
            _ if self.is_cluster() => Reach::RealOnly,
            _ => Reach::Both,
        }
    }
}

impl Fault {
    /// Whether only a cluster run (`cluster N`) can apply it.
    pub fn is_cluster(&self) -> bool {
        matches!(
            self,
            Fault::KillNode { .. }
                | Fault::PauseNode { .. }
                | Fault::KillLeader { .. }
                | Fault::PauseNats { .. }
                | Fault::Isolate { .. }
                | Fault::RestartNats { .. }
        )
    }
}

impl TimedFault {
    /// When the fault is over (the same instant for one-shot faults).
    pub fn heals_at(&self) -> Duration {
        self.at + self.fault.duration()
    }
}

/// Everything a run does besides the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub clients: usize,
    pub topics: usize,
    /// `--window` of the server.
    pub window: usize,
    /// `--coalesce` of the server, in milliseconds; with `coalesce_auto`, the
    /// `--coalesce-budget` of `--coalesce auto` (written `coalesce_auto_ms N`).
    pub coalesce_ms: u64,
    pub coalesce_auto: bool,
    /// Publishing runs from 1 s to `1 s + publish_for`.
    pub publish_for: Duration,
    pub publish_every: Duration,
    /// Link latency upper bound (jitter between 1 ms and this).
    pub max_latency: Duration,
    /// What the store keeps across boots.
    pub store: StoreMode,
    /// Bytes of padding in every published event (large events fill socket buffers,
    /// windows and the buffer budget sooner).
    pub event_bytes: usize,
    /// `--max-buffered-bytes` of the server, in KiB (`None`: the server's default).
    pub max_buffered_kb: Option<u64>,
    /// Real only: the server's open-file limit (`RLIMIT_NOFILE`); the simulated server has
    /// no descriptors.
    pub nofile: Option<u64>,
    /// Real only: the server runs in a memory cgroup of this many MiB (where the machine
    /// lets one be made) and must never be OOM-killed.
    pub memory_limit_mb: Option<u64>,
    /// Real only: the clients reach the server through a stock nginx (`reverse_proxy
    /// nginx`), each through its own Toxiproxy proxy in front of it.
    pub nginx: bool,
    /// Real only: cluster mode (`cluster N`): N `sse-server` nodes on a 3-node NATS
    /// JetStream cluster; the simulation runs one node on its durable store.
    pub cluster: Option<usize>,
    /// Checks on the server's metrics at the end of the run: the proof that a fault had
    /// the effect it is there for (a write timeout fired, the budget refused growth).
    pub expects: Vec<Expect>,
    pub faults: Vec<TimedFault>,
}

/// One check on a metric series at the end of a run (the last boot's `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The series as `/metrics` writes it, labels included: `sse_rejected_total{reason="buffer_full"}`.
    pub series: String,
    /// `true`: at least `value`; `false`: at most.
    pub at_least: bool,
    /// Counters and gauges here are whole numbers.
    pub value: u64,
    /// Written `expect_real`: it holds only where a real-only item applies (a refusal
    /// that needs `nofile`); a simulation lists it as skipped.
    pub real_only: bool,
}

impl Expect {
    /// Whether `observed` (absent: 0) satisfies it.
    pub fn holds(&self, observed: Option<f64>) -> bool {
        let (observed, value) = (observed.unwrap_or(0.0), self.value as f64);
        if self.at_least {
            observed >= value
        } else {
            observed <= value
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keyword = if self.real_only { "expect_real" } else { "expect" };
        write!(f, "{keyword} {} {} {}", self.series, if self.at_least { ">=" } else { "<=" }, self.value)
    }
}

/// The value of `series` in a Prometheus text exposition (`None`: not there).
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Plan {
    /// A calm plan: no faults.
    pub fn calm(clients: usize) -> Plan {
        Plan {
            clients,
            topics: 3,
            window: 256,
            coalesce_ms: 0,
            coalesce_auto: false,
            publish_for: Duration::from_secs(10),
            publish_every: Duration::from_millis(50),
            max_latency: Duration::from_millis(5),
            store: StoreMode::Fresh,
            event_bytes: 0,
            max_buffered_kb: None,
            nofile: None,
            memory_limit_mb: None,
            nginx: false,
            cluster: None,
            expects: Vec::new(),
            faults: Vec::new(),
        }
    }

    /// The settings only a real run can apply, as the text form writes them (a
    /// simulation lists them as skipped).
    pub fn real_only_settings(&self) -> Vec<String> {
        let mut settings = Vec::new();
        if let Some(n) = self.nofile {
            settings.push(format!("nofile {n}"));
        }
        if let Some(mb) = self.memory_limit_mb {
            settings.push(format!("memory_limit_mb {mb}"));
        }
        if self.nginx {
            settings.push("reverse_proxy nginx".to_owned());
        }
        if let Some(nodes) = self.cluster {
            settings.push(format!("cluster {nodes}"));
        }
        settings
    }

    /// What every backend appends to each published event's data: the plan's
    /// `event_bytes` of padding (nothing by default).
    pub fn padding(&self) -> String {
        if self.event_bytes == 0 {
            return String::new();
        }
        format!(" {}", "x".repeat(self.event_bytes))
    }

    /// The most bytes the windows may hold: every topic's window full of the plan's events
    /// (each frames to under 128 bytes plus its padding), or the plan's budget if lower.
    pub fn buffer_budget(&self) -> usize {
        let windows = self.topics * self.window * (128 + self.event_bytes);
        self.max_buffered_kb.map_or(windows, |kb| windows.min(kb as usize * 1024))
    }

    /// The plan with one more fault.
    pub fn with(mut self, at_ms: u64, fault: Fault) -> Plan {
        self.faults.push(TimedFault { at: Duration::from_millis(at_ms), fault });
        self
    }

    /// The topics' names: `t0`, `t1`, ….
    pub fn topic_names(&self) -> Vec<String> {
        (0..self.topics).map(|t| format!("t{t}")).collect()
    }

    /// The topics each client follows: one or two of the plan's, drawn from `rng`. Every
    /// backend draws them the same way, so a seed and a plan mean the same clients.
    pub fn client_topics(&self, rng: &SeededRng) -> Vec<BTreeSet<String>> {
        let names = self.topic_names();
        let pick = || names[rng.up_to(self.topics as u64 - 1) as usize].clone();
        (0..self.clients)
            .map(|_| {
                let mut topics = BTreeSet::from([pick()]);
                if rng.up_to(1) == 1 {
                    topics.insert(pick());
                }
                topics
            })
            .collect()
    }

    /// Whether something other than the server's header timeout may decide when a
    /// connection opened at `at` closes within `within`: a restart or move closes the
    /// listener (unaccepted connections hang in turmoil until the host restarts), a
    /// freeze stops the server from closing anything. Slowloris attacks then are not
    /// judged, in either backend.
    pub fn listener_disturbed(&self, at: Duration, within: Duration) -> bool {
        self.faults.iter().any(|f| match f.fault {
            Fault::Restart { .. } | Fault::Move { .. } => f.at >= at && f.at <= at + within,
            Fault::Freeze { .. } => f.at <= at + within && f.heals_at() >= at,
            _ => false,
        })
    }

    /// The faults' timeline: each fault's start, then its heal (a fault that lasts), as
    /// (when, whether it is the heal, the fault's index), in time order (a start before a
    /// heal at one instant).
    pub fn timeline(&self) -> Vec<(Duration, bool, usize)> {
        let mut events = Vec::new();
        for (i, fault) in self.faults.iter().enumerate() {
            events.push((fault.at, false, i));
            if !fault.fault.duration().is_zero() {
                events.push((fault.heals_at(), true, i));
            }
        }
        events.sort_by_key(|(at, heal, i)| (*at, *heal, *i));
        events
    }

    /// When publishing stops.
    pub fn publish_until(&self) -> Duration {
        Duration::from_secs(1) + self.publish_for
    }

    /// When the last fault is over (or publishing ends, if later).
    pub fn calm_from(&self) -> Duration {
        self.faults.iter().map(TimedFault::heals_at).max().unwrap_or_default().max(self.publish_until())
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "clients {}", self.clients)?;
        writeln!(f, "topics {}", self.topics)?;
        writeln!(f, "window {}", self.window)?;
        let coalesce = if self.coalesce_auto { "coalesce_auto_ms" } else { "coalesce_ms" };
        writeln!(f, "{coalesce} {}", self.coalesce_ms)?;
        writeln!(f, "publish_for_ms {}", ms(self.publish_for))?;
        writeln!(f, "publish_every_ms {}", ms(self.publish_every))?;
        writeln!(f, "max_latency_ms {}", ms(self.max_latency))?;
        writeln!(f, "store {}", self.store.as_str())?;
        if self.event_bytes > 0 {
            writeln!(f, "event_bytes {}", self.event_bytes)?;
        }
        if let Some(kb) = self.max_buffered_kb {
            writeln!(f, "max_buffered_kb {kb}")?;
        }
        for setting in self.real_only_settings() {
            writeln!(f, "{setting}")?;
        }
        for expect in &self.expects {
            writeln!(f, "{expect}")?;
        }
        for TimedFault { at, fault } in &self.faults {
            write!(f, "at_ms {} {}", ms(*at), fault.kind())?;
            match fault {
                Fault::Partition { client, heal_after } => writeln!(f, " {client} {}", ms(*heal_after))?,
                Fault::Hold { client, release_after } => writeln!(f, " {client} {}", ms(*release_after))?,
                Fault::Crash { restart_after } | Fault::Restart { restart_after } | Fault::Move { restart_after } => {
                    writeln!(f, " {}", ms(*restart_after))?
                }
                Fault::Lag { client, latency, duration } => {
                    writeln!(f, " {client} {} {}", ms(*latency), ms(*duration))?
                }
                Fault::Drop { client } => writeln!(f, " {client}")?,
                Fault::DropAll => writeln!(f)?,
                Fault::Stall { client, duration } => writeln!(f, " {client} {}", ms(*duration))?,
                Fault::Slowloris { connections } => writeln!(f, " {connections}")?,
                Fault::Cut { client, after_bytes } => writeln!(f, " {client} {after_bytes}")?,
                Fault::Freeze { duration } => writeln!(f, " {}", ms(*duration))?,
                Fault::Slicer { client, duration } => writeln!(f, " {client} {}", ms(*duration))?,
                Fault::Bandwidth { client, kbps, duration } => writeln!(f, " {client} {kbps} {}", ms(*duration))?,
                Fault::SlowClose { client, delay, duration } => {
                    writeln!(f, " {client} {} {}", ms(*delay), ms(*duration))?
                }
                Fault::Flood { connections, duration } => writeln!(f, " {connections} {}", ms(*duration))?,
                Fault::KillNode { node, restart_after } => writeln!(f, " {node} {}", ms(*restart_after))?,
                Fault::PauseNode { node, duration } | Fault::PauseNats { node, duration } => {
                    writeln!(f, " {node} {}", ms(*duration))?
                }
                Fault::Isolate { node, heal_after } => writeln!(f, " {node} {}", ms(*heal_after))?,
                Fault::KillLeader { restart_after } | Fault::RestartNats { restart_after } => {
                    writeln!(f, " {}", ms(*restart_after))?
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Plan {
    type Err = String;

    fn from_str(text: &str) -> Result<Plan, String> {
        let mut plan = Plan::calm(1);
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| -> Result<u64, String> {
                words
                    .get(i)
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| format!("line {}: expected a number: {line}", n + 1))
            };
            let dur = |i: usize| num(i).map(Duration::from_millis);
            match words[0] {
                "clients" => plan.clients = num(1)? as usize,
                "topics" => plan.topics = num(1)? as usize,
                "window" => plan.window = num(1)? as usize,
                "coalesce_ms" => (plan.coalesce_ms, plan.coalesce_auto) = (num(1)?, false),
                "coalesce_auto_ms" => match num(1)? {
                    0 => return Err(format!("line {}: an auto budget is above zero: {line}", n + 1)),
                    budget => (plan.coalesce_ms, plan.coalesce_auto) = (budget, true),
                },
                "publish_for_ms" => plan.publish_for = dur(1)?,
                "publish_every_ms" => plan.publish_every = dur(1)?,
                "max_latency_ms" => plan.max_latency = dur(1)?,
                "event_bytes" => plan.event_bytes = num(1)? as usize,
                "max_buffered_kb" => plan.max_buffered_kb = Some(num(1)?),
                "nofile" => plan.nofile = Some(num(1)?),
                "memory_limit_mb" => plan.memory_limit_mb = Some(num(1)?),
                "cluster" => plan.cluster = Some((num(1)? as usize).max(1)),
                "reverse_proxy" => match words.get(1).copied() {
                    Some("nginx") => plan.nginx = true,
                    _ => return Err(format!("line {}: reverse_proxy takes nginx: {line}", n + 1)),
                },
                "expect" | "expect_real" => {
                    let value = words.get(3).and_then(|w| w.parse().ok());
                    let (Some(series), Some(op), Some(value)) = (words.get(1), words.get(2), value) else {
                        return Err(format!("line {}: expect SERIES >= N or <= N: {line}", n + 1));
                    };
                    let at_least = match *op {
                        ">=" => true,
                        "<=" => false,
                        _ => return Err(format!("line {}: expect compares with >= or <=: {line}", n + 1)),
                    };
                    let real_only = words[0] == "expect_real";
                    plan.expects.push(Expect { series: (*series).to_owned(), at_least, value, real_only });
                }
                "store" => {
                    plan.store = match words.get(1).copied() {
                        Some("fresh") => StoreMode::Fresh,
                        Some("durable") => StoreMode::Durable,
                        Some("interval") => StoreMode::Interval,
                        _ => return Err(format!("line {}: store is fresh, durable or interval: {line}", n + 1)),
                    }
                }
                "at_ms" => {
                    let at = dur(1)?;
                    let fault = match words.get(2).copied() {
                        Some("partition") => Fault::Partition { client: num(3)? as usize, heal_after: dur(4)? },
                        Some("hold") => Fault::Hold { client: num(3)? as usize, release_after: dur(4)? },
                        Some("crash") => Fault::Crash { restart_after: dur(3)? },
                        Some("restart") => Fault::Restart { restart_after: dur(3)? },
                        Some("move") => Fault::Move { restart_after: dur(3)? },
                        Some("lag") => Fault::Lag { client: num(3)? as usize, latency: dur(4)?, duration: dur(5)? },
                        Some("drop") => Fault::Drop { client: num(3)? as usize },
                        Some("drop_all") => Fault::DropAll,
                        Some("stall") => Fault::Stall { client: num(3)? as usize, duration: dur(4)? },
                        Some("slowloris") => Fault::Slowloris { connections: num(3)? as usize },
                        Some("cut") => Fault::Cut { client: num(3)? as usize, after_bytes: num(4)? as usize },
                        Some("freeze") => Fault::Freeze { duration: dur(3)? },
                        Some("slicer") => Fault::Slicer { client: num(3)? as usize, duration: dur(4)? },
                        Some("bandwidth") => {
                            Fault::Bandwidth { client: num(3)? as usize, kbps: num(4)?, duration: dur(5)? }
                        }
                        Some("slow_close") => {
                            Fault::SlowClose { client: num(3)? as usize, delay: dur(4)?, duration: dur(5)? }
                        }
                        Some("flood") => Fault::Flood { connections: num(3)? as usize, duration: dur(4)? },
                        Some("kill_node") => Fault::KillNode { node: num(3)? as usize, restart_after: dur(4)? },
                        Some("pause_node") => Fault::PauseNode { node: num(3)? as usize, duration: dur(4)? },
                        Some("kill_leader") => Fault::KillLeader { restart_after: dur(3)? },
                        Some("pause_nats") => Fault::PauseNats { node: num(3)? as usize, duration: dur(4)? },
                        Some("isolate") => Fault::Isolate { node: num(3)? as usize, heal_after: dur(4)? },
                        Some("restart_nats") => Fault::RestartNats { restart_after: dur(3)? },
                        _ => return Err(format!("line {}: unknown fault: {line}", n + 1)),
                    };
                    plan.faults.push(TimedFault { at, fault });
                }
                _ => return Err(format!("line {}: unknown setting: {line}", n + 1)),
            }
        }
        if plan.clients == 0 || plan.topics == 0 {
            return Err("a plan needs at least one client and one topic".into());
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_through_text() {
        let plan = Plan { store: StoreMode::Interval, ..Plan::calm(3) }
            .with(2000, Fault::Partition { client: 1, heal_after: Duration::from_secs(4) })
            .with(3000, Fault::Crash { restart_after: Duration::from_millis(500) })
            .with(4000, Fault::DropAll)
            .with(4500, Fault::Restart { restart_after: Duration::from_secs(3) })
            .with(4700, Fault::Move { restart_after: Duration::from_secs(3) })
            .with(4800, Fault::Lag { client: 2, latency: Duration::from_millis(300), duration: Duration::from_secs(2) })
            .with(5000, Fault::Stall { client: 0, duration: Duration::from_secs(2) })
            .with(5500, Fault::Slowloris { connections: 5 })
            .with(5600, Fault::Cut { client: 2, after_bytes: 700 })
            .with(5700, Fault::Freeze { duration: Duration::from_secs(1) })
            .with(5800, Fault::Slicer { client: 1, duration: Duration::from_secs(2) })
            .with(5900, Fault::Bandwidth { client: 0, kbps: 4, duration: Duration::from_secs(2) })
            .with(6000, Fault::SlowClose { client: 2, delay: Duration::from_secs(1), duration: Duration::from_secs(2) })
            .with(6100, Fault::Flood { connections: 400, duration: Duration::from_secs(2) })
            .with(6200, Fault::KillNode { node: 1, restart_after: Duration::from_secs(2) })
            .with(6300, Fault::PauseNode { node: 0, duration: Duration::from_secs(1) })
            .with(6400, Fault::KillLeader { restart_after: Duration::from_secs(3) })
            .with(6500, Fault::PauseNats { node: 2, duration: Duration::from_secs(1) })
            .with(6600, Fault::Isolate { node: 1, heal_after: Duration::from_secs(2) })
            .with(6700, Fault::RestartNats { restart_after: Duration::from_secs(4) });
        let plan = Plan {
            event_bytes: 2048,
            max_buffered_kb: Some(65536),
            nofile: Some(256),
            memory_limit_mb: Some(256),
            nginx: true,
            cluster: Some(2),
            coalesce_ms: 5,
            coalesce_auto: true,
            expects: vec![
                Expect {
                    series: "sse_rejected_total{reason=\"buffer_full\"}".into(),
                    at_least: true,
                    value: 1,
                    real_only: false,
                },
                Expect { series: "sse_accept_errors_total".into(), at_least: false, value: 0, real_only: true },
            ],
            ..plan
        };
        assert_eq!(plan.to_string().parse::<Plan>().unwrap(), plan);
        assert!("expect sse_streams == 1".parse::<Plan>().is_err());
        let exposition = "# HELP x\nsse_rejected_total{reason=\"buffer_full\"} 3\nsse_accept_errors_total 0\n";
        assert_eq!(metric_value(exposition, "sse_rejected_total{reason=\"buffer_full\"}"), Some(3.0));
        assert!(plan.expects.iter().all(|e| e.holds(metric_value(exposition, &e.series))));
        assert!(!plan.expects[0].holds(None), "an absent series counts as 0");
        assert!("clients 0".parse::<Plan>().is_err());
        assert!("at_ms 5 explode".parse::<Plan>().is_err());
        assert!(plan.to_string().contains("\ncoalesce_auto_ms 5\n"));
        assert!("coalesce_auto_ms 0".parse::<Plan>().unwrap_err().contains("above zero"));
    }
}
