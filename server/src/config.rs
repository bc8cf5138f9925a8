//! Configuration: one clap struct, every flag also an `SSE_…` environment variable,
//! durations written like `15s` or `500ms`. Libraries, tests and simulations build it
//! with [`Config::default`] and change what they need.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::access::cors::CorsOrigin;
use crate::access::pattern::TopicPattern;
use crate::access::secret::Secret;
use crate::store::FsyncPolicy;
use crate::stream::pacing::Coalesce;

/// File descriptors kept back from `--max-connections` for the listener, logs, metrics
/// and connections that are being refused.
pub const FD_RESERVE: usize = 128;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where events are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// On disk in `--data-dir`: acknowledged events survive crashes and restarts.
    Disk,
    /// The in-memory windows only: a restart starts a new history (a new epoch).
    Memory,
    /// Cluster mode: a NATS JetStream stream (`--nats-url`, `--nats-stream`) that many
    /// server processes share; it assigns the ids, and a client resumes on any node.
    Nats,
}

/// Every setting of the server.
#[derive(Clone, Debug, Parser)]
#[command(name = "sse-server", version, about = "A Server-Sent Events server with bounded memory and resume")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Listen backlog (pending connections the kernel queues).
    #[arg(long, env = "SSE_BACKLOG", default_value_t = 1024)]
    pub backlog: u32,

    /// Share `--listen` with other processes started with this flag (`SO_REUSEPORT`): the
    /// kernel spreads new connections over them, and a process that exits loses only its
    /// own connections.
    #[arg(long, env = "SSE_REUSE_PORT")]
    pub reuse_port: bool,

    /// Idle time after which a stream gets a `:` heartbeat comment.
    #[arg(long, env = "SSE_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,

    /// Reconnection delay sent to clients in the opening `retry:` field.
    #[arg(long, env = "SSE_RETRY", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry: Duration,

    /// On shutdown each stream is told `retry:` drawn uniformly from
    /// [retry, retry + retry-jitter], so clients do not return in one herd.
    #[arg(long, env = "SSE_RETRY_JITTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_jitter: Duration,

    /// A write that makes no progress for this long ends the connection (half-open or
    /// frozen peer).
    #[arg(long, env = "SSE_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Time allowed to send a whole request head (slowloris defence).
    #[arg(long, env = "SSE_HEADER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Open connections allowed; default: the RLIMIT_NOFILE soft limit minus a reserve
    /// of 128.
    #[arg(long, env = "SSE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Events kept in memory per topic for resume and slow readers.
    #[arg(long, env = "SSE_WINDOW", default_value_t = 1024)]
    pub window: usize,

    /// Bytes (framed) kept in memory per topic.
    #[arg(long, env = "SSE_WINDOW_BYTES", default_value_t = 4 << 20)]
    pub window_bytes: usize,

    /// Largest event body accepted, in bytes (413 beyond).
    #[arg(long, env = "SSE_MAX_EVENT_BYTES", default_value_t = 64 << 10)]
    pub max_event_bytes: usize,

    /// Framed bytes held in all topic windows together; a publish that would grow past
    /// it gets 503 (turnover within full windows is never refused).
    #[arg(long, env = "SSE_MAX_BUFFERED_BYTES", default_value_t = 256 << 20)]
    pub max_buffered_bytes: usize,

    /// Most topics held at once; a new topic past it gets 503.
    #[arg(long, env = "SSE_MAX_TOPICS", default_value_t = 100_000)]
    pub max_topics: usize,

    /// `auto`: wake a topic's subscribers at once while it is quiet, and gather its events
    /// for `--coalesce-budget` while its wake-ups come faster than that and cost enough
    /// writes to pay; or a fixed time to gather events before every wake-up (`0s`: never).
    #[arg(long, env = "SSE_COALESCE", default_value = "auto", value_parser = parse_coalesce)]
    pub coalesce: Coalesce,

    /// With `--coalesce auto`: the longest an event waits for others to join its write.
    #[arg(long, env = "SSE_COALESCE_BUDGET", default_value = "5ms", value_parser = parse_budget)]
    pub coalesce_budget: Duration,

    /// Time allowed for a graceful shutdown before the process exits anyway.
    #[arg(long, env = "SSE_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Seed of the one random source (epoch, retry jitter); random when absent.
    #[arg(long, env = "SSE_SEED")]
    pub seed: Option<u64>,

    /// History epoch carried in event ids (8 hex digits), for a store created now. The
    /// binary picks a random one per process unless given: the in-memory store starts a
    /// new history on every start, even with a pinned `--seed`, and old ids must not look
    /// valid in it. A disk store keeps the epoch it was created with.
    #[arg(long, env = "SSE_EPOCH", hide = true, value_parser = parse_epoch)]
    pub epoch: Option<u32>,

    /// Where events are kept.
    #[arg(long, env = "SSE_STORE", value_enum, default_value_t = StoreKind::Disk)]
    pub store: StoreKind,

    /// Directory of the disk store (created when missing; one server at a time).
    #[arg(long, env = "SSE_DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,

    /// When a publish is acknowledged: `always` (after an fsync shared by concurrent
    /// publishes) or `interval:<dur>` (after the write; a machine crash can lose up to
    /// `<dur>` of acknowledged events).
    #[arg(long, env = "SSE_FSYNC", default_value = "always")]
    pub fsync: FsyncPolicy,

    /// Events the disk store keeps per topic.
    #[arg(long, env = "SSE_RETAIN_EVENTS", default_value_t = 100_000)]
    pub retain_events: u64,

    /// Framed bytes the disk store keeps per topic.
    #[arg(long, env = "SSE_RETAIN_BYTES", default_value_t = 256 << 20)]
    pub retain_bytes: u64,

    /// Age after which the disk store removes an event.
    #[arg(long, env = "SSE_RETAIN_AGE", default_value = "7days", value_parser = humantime::parse_duration)]
    pub retain_age: Duration,

    /// NATS servers of cluster mode, comma-separated.
    #[arg(long, env = "SSE_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// The JetStream stream cluster mode keeps its history in (created when missing;
    /// one that is less durable than asked for is a start-up error).
    #[arg(long, env = "SSE_NATS_STREAM", default_value = "SSE")]
    pub nats_stream: String,

    /// Replicas of the stream: 3 on a 3-node NATS cluster (a publish is acknowledged once
    /// two nodes hold it); 1 only for a single NATS server, without fault tolerance.
    #[arg(long, env = "SSE_NATS_REPLICAS", default_value_t = 3)]
    pub nats_replicas: usize,

    /// A NATS credentials file (`.creds`: user JWT and NKey seed).
    #[arg(long, env = "SSE_NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,

    /// A NATS authentication token.
    #[arg(long, env = "SSE_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,

    /// CA certificates (PEM) to verify the NATS servers by; connects over TLS.
    #[arg(long, env = "SSE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for mutual TLS with NATS (with `--nats-tls-key`).
    #[arg(long, env = "SSE_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<std::path::PathBuf>,

    /// Client key (PEM) for mutual TLS with NATS.
    #[arg(long, env = "SSE_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<std::path::PathBuf>,

    /// How long a publish's `Idempotency-Key` is remembered: a retry with the same key
    /// within it gets the first publish's id and stores nothing new.
    #[arg(long, env = "SSE_DEDUP_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub dedup_window: Duration,

    /// A bearer token that may publish (`Authorization: Bearer <token>`); repeat the flag
    /// for several, or give `SSE_PUBLISH_TOKENS` a comma-separated list. Without any,
    /// anyone who can reach the server may publish, and the server warns at start.
    #[arg(long = "publish-token", env = "SSE_PUBLISH_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub publish_tokens: Vec<Secret>,

    /// Key of HS256 JSON Web Tokens (at least 32 bytes): a token's claims name the topics
    /// its holder may publish to and subscribe to (see the README's Security section).
    #[arg(long, env = "SSE_JWT_SECRET", hide_env_values = true, value_parser = parse_jwt_secret)]
    pub jwt_secret: Option<Secret>,

    /// Topics only token holders may read: a name, `prefix*` or `*`; repeat the flag or
    /// give `SSE_PRIVATE_TOPICS` a comma-separated list. Needs `--jwt-secret`.
    #[arg(long = "private-topic", env = "SSE_PRIVATE_TOPICS", value_delimiter = ',', requires = "jwt_secret")]
    pub private_topics: Vec<TopicPattern>,

    /// A page origin allowed to read streams and publish from a browser
    /// (`https://app.example.com`), or `*` for any origin without credentials; repeat
    /// the flag or give `SSE_CORS_ORIGINS` a comma-separated list.
    #[arg(long = "cors-origin", env = "SSE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<CorsOrigin>,

    /// Most connections open at once from one peer address (0: no limit); past it, 429.
    #[arg(long, env = "SSE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Publishes per second one publisher may make, in bursts of as many (0: no limit);
    /// past it, 429 with `Retry-After`. A publisher is its token, its JWT `sub`, or else
    /// its address.
    #[arg(long, env = "SSE_PUBLISH_RATE", default_value_t = 0)]
    pub publish_rate: u32,

    /// Time allowed for a publish body to arrive once its head has (408 beyond).
    #[arg(long, env = "SSE_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// Certificate chain (PEM) to serve TLS with; needs `--tls-key`.
    #[arg(long, env = "SSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "SSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Log format.
    #[arg(long, env = "SSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn parse_jwt_secret(text: &str) -> Result<Secret, String> {
    if text.len() < 32 {
        return Err("an HS256 key is at least 32 bytes".to_owned());
    }
    text.parse()
}

/// `auto` (its budget is `--coalesce-budget`, set by [`Config::pacing`]) or a duration.
fn parse_coalesce(text: &str) -> Result<Coalesce, String> {
    if text == "auto" {
        return Ok(Coalesce::Auto { budget: Duration::ZERO });
    }
    humantime::parse_duration(text)
        .map(Coalesce::Fixed)
        .map_err(|error| format!("`auto` or a duration like `10ms` ({error})"))
}

fn parse_budget(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text).map_err(|error| error.to_string())? {
        budget if budget.is_zero() => Err("a budget above zero (for no gathering, `--coalesce 0s`)".to_owned()),
        budget if budget > Duration::from_secs(1) => Err("a budget of at most 1s".to_owned()),
        budget => Ok(budget),
    }
}

fn parse_epoch(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 16).map_err(|_| "an epoch is up to 8 hex digits".to_owned())
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["sse-server"])
    }
}

impl Config {
    /// How topics pace their wake-ups: `--coalesce`, with `--coalesce-budget` for `auto`.
    pub fn pacing(&self) -> Coalesce {
        match self.coalesce {
            Coalesce::Auto { .. } => Coalesce::Auto { budget: self.coalesce_budget },
            fixed => fixed,
        }
    }

    /// `--max-connections`, or what the open-file limit allows.
    pub fn effective_max_connections(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| open_files_soft_limit().unwrap_or(1024).saturating_sub(FD_RESERVE).max(1))
    }
}

/// The soft RLIMIT_NOFILE, read from `/proc/self/limits` (no `unsafe` needed).
pub fn open_files_soft_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_readme() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.heartbeat, Duration::from_secs(15));
        assert_eq!(c.write_timeout, Duration::from_secs(30));
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.max_event_bytes, 65536);
        assert_eq!(c.pacing(), Coalesce::Auto { budget: Duration::from_millis(5) });
        assert_eq!((c.store, c.fsync), (StoreKind::Disk, FsyncPolicy::Always));
        assert_eq!(c.data_dir, std::path::Path::new("./data"));
    }

    #[test]
    fn durations_parse_with_units_and_bad_ones_fail() {
        let c = Config::try_parse_from(["x", "--heartbeat", "500ms", "--coalesce", "10ms"]).unwrap();
        assert_eq!(c.heartbeat, Duration::from_millis(500));
        assert!(Config::try_parse_from(["x", "--heartbeat", "soon"]).is_err());
    }

    #[test]
    fn coalesce_is_a_duration_or_auto_with_a_budget() {
        let pacing = |args: &[&str]| Config::try_parse_from([&["x"], args].concat()).map(|c| c.pacing());
        assert_eq!(pacing(&["--coalesce", "10ms"]).unwrap(), Coalesce::Fixed(Duration::from_millis(10)));
        assert_eq!(pacing(&["--coalesce", "auto"]).unwrap(), Coalesce::Auto { budget: Duration::from_millis(5) });
        let budget = pacing(&["--coalesce", "auto", "--coalesce-budget", "2ms"]).unwrap();
        assert_eq!(budget, Coalesce::Auto { budget: Duration::from_millis(2) });
        // Fixed pacing ignores the budget.
        assert_eq!(pacing(&["--coalesce", "0s", "--coalesce-budget", "2ms"]).unwrap(), Coalesce::Fixed(Duration::ZERO));
        let error = |args: &[&str]| pacing(args).unwrap_err().to_string();
        assert!(error(&["--coalesce", "sometimes"]).contains("`auto` or a duration"));
        assert!(error(&["--coalesce-budget", "0ms"]).contains("above zero"));
        assert!(error(&["--coalesce-budget", "2s"]).contains("at most 1s"));
    }

    #[test]
    fn security_flags_say_what_they_need() {
        let error = |args: &[&str]| Config::try_parse_from([&["x"], args].concat()).unwrap_err().to_string();
        assert!(error(&["--private-topic", "p/*"]).contains("--jwt-secret"));
        assert!(error(&["--jwt-secret", "too-short-key"]).contains("at least 32 bytes"));
        assert!(error(&["--tls-cert", "c.pem"]).contains("--tls-key"));
        assert!(error(&["--cors-origin", "https://x.example/"]).contains("scheme://host"));
        assert!(error(&["--private-topic", "a b", "--jwt-secret", &"k".repeat(32)]).contains("topic pattern"));
        let c = Config::try_parse_from(["x", "--private-topic", "p/*,q", "--jwt-secret", &"k".repeat(32)]).unwrap();
        assert_eq!(c.private_topics.len(), 2);
        assert_eq!((c.max_connections_per_ip, c.publish_rate, c.body_timeout), (0, 0, Duration::from_secs(10)));
    }

    #[test]
    fn connection_limit_follows_the_open_file_limit() {
        let soft = open_files_soft_limit().expect("linux exposes /proc/self/limits");
        assert_eq!(Config::default().effective_max_connections(), soft - FD_RESERVE);
    }
}
