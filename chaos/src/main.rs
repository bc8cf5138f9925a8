//! `sse-chaos`: load generation and benchmarks against a running `sse-server` (the real
//! chaos scenarios land here next; see DESIGN.md).
//!
//! Modules:
//! - `idle`: open many idle streams and measure the server's memory per stream.
//! - `fanout`: many subscribers, a paced publisher; deliveries per server CPU-second and
//!   delivery latency percentiles.
//! - `proc_stats`: another process's RSS and CPU time from `/proc`.
//! - `stream_client`: a raw HTTP/1.1 event-stream client that scans `data:` lines.
//! - `publish_bench`: acknowledged publishes per second and their latency.
//! - `resume_bench`: a reconnect herd resuming a topic's history after a restart.
//! - `publisher`: a keep-alive HTTP/1.1 publisher.

mod fanout;
mod idle;
mod proc_stats;
mod publish_bench;
mod publisher;
mod resume_bench;
mod stream_client;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "sse-chaos", about = "Load and benchmarks for sse-server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open N idle streams and report the server's RSS growth per stream.
    Idle {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// The server's pid, to read its RSS from /proc.
        #[arg(long)]
        server_pid: u32,
        /// Streams to open.
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        /// Give up after this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Subscribers on one topic, one publisher at a fixed rate; reports deliveries per
    /// server CPU-second and delivery latency.
    Fanout {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// The server's pid, to read its CPU time from /proc.
        #[arg(long)]
        server_pid: u32,
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Events published per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Event body size in bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// How long to publish.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// N publishers publishing back to back; acknowledged publishes per second and
    /// publish latency.
    Publish {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Concurrent kept-alive publishers.
        #[arg(long, default_value_t = 64)]
        publishers: usize,
        /// Event body size in bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// How long to publish.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Publish a topic's history and print `RESUME_FROM=<id>` (the id before it).
    History {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Topic.
        #[arg(long, default_value = "herd")]
        topic: String,
        /// Events to publish.
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Event body size in bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
    },
    /// Many clients resume one topic from one id; time until all have every event.
    Resume {
        /// Server address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// The server's pid, to read its RSS from /proc.
        #[arg(long)]
        server_pid: u32,
        /// Topic.
        #[arg(long, default_value = "herd")]
        topic: String,
        /// The id to resume from (printed by `history`).
        #[arg(long)]
        from: String,
        /// Clients.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Events each client must receive.
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Give up after this long.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Idle { addr, server_pid, streams, timeout } => {
                tokio::time::timeout(timeout, idle::run(addr, server_pid, streams)).await??
            }
            Command::Fanout { addr, server_pid, subscribers, rate, size, duration } => {
                fanout::run(fanout::Plan { addr, server_pid, subscribers, rate, size, duration }).await?
            }
            Command::Publish { addr, publishers, size, duration } => {
                publish_bench::run(publish_bench::Plan { addr, publishers, size, duration }).await?
            }
            Command::History { addr, topic, events, size } => resume_bench::history(addr, &topic, events, size).await?,
            Command::Resume { addr, server_pid, topic, from, clients, events, timeout } => {
                resume_bench::run(resume_bench::Plan { addr, server_pid, topic, from, clients, events, timeout })
                    .await?
            }
        }
        Ok(())
    })
}
