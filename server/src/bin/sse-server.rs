//! The `sse-server` binary: parse configuration, set up logging, bind, run until
//! SIGTERM or SIGINT, drain, exit.

use std::hash::{BuildHasher, RandomState};
use std::process::ExitCode;

use clap::Parser;
use sse_server::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// `EX_USAGE`: the command line was wrong.
const EXIT_USAGE: u8 = 64;
/// `EX_OSERR`-like: the listener could not be set up.
const EXIT_BIND: u8 = 71;
/// `EX_IOERR`: the event store could not be opened (unreadable, locked, damaged).
const EXIT_STORE: u8 = 74;

fn main() -> ExitCode {
    let mut config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let message = error.kind().to_string();
            let detail = error.to_string();
            let first = detail.lines().next().unwrap_or(&message);
            eprintln!("sse-server: {first}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(config.log_format);
    // A random seed when none is given, logged so the run can be repeated.
    config.seed.get_or_insert_with(|| RandomState::new().hash_one(std::process::id()));
    // A fresh history per process for the memory store (ids from an earlier run must not
    // look valid); a new disk store starts with it and keeps it.
    config.epoch.get_or_insert_with(|| RandomState::new().hash_one(("epoch", std::process::id())) as u32);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sse-server: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match sse_server::listener::bind(config.listen, config.backlog) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("sse-server: cannot listen on {}: {error}", config.listen);
                return ExitCode::from(EXIT_BIND);
            }
        };
        let server = match sse_server::Server::open(config) {
            Ok(server) => server,
            Err(error) => {
                eprintln!("sse-server: cannot open the event store: {error}");
                return ExitCode::from(EXIT_STORE);
            }
        };
        match server.run(listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("sse-server: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
