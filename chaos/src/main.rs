//! `sse-chaos`: load generation and benchmarks against a running `sse-server` (the real
//! chaos scenarios land here next; see DESIGN.md).
//!
//! Modules:
//! - `idle`: open many idle streams and measure the server's memory per stream.
//! - `fanout`: many subscribers, a paced publisher; deliveries per server CPU-second and
//!   delivery latency percentiles.
//! - `proc_stats`: another process's RSS and CPU time from `/proc`.
//! - `stream_client`: a raw HTTP/1.1 event-stream client that scans `data:` lines.
//! - `publisher`: a keep-alive HTTP/1.1 publisher.

mod fanout;
mod idle;
mod proc_stats;
mod publisher;
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
        }
        Ok(())
    })
}
