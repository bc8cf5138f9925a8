//! The `sse-server` binary: parse configuration, set up logging, bind, run until
//! SIGTERM or SIGINT, drain, exit.

use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use sse_server::config::{Config, LogFormat};
use sse_server::server::StartError;
use tracing_subscriber::EnvFilter;

/// `EX_USAGE`: the command line was wrong.
const EXIT_USAGE: u8 = 64;
/// `EX_OSERR`-like: the listener could not be set up.
const EXIT_BIND: u8 = 71;
/// `EX_IOERR`: the event store could not be opened (unreadable, locked, damaged).
const EXIT_STORE: u8 = 74;
/// `EX_CONFIG`: a file the configuration names is unusable (the TLS certificate or key).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let mut config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let message = error.kind().to_string();
            let detail = redact_secrets(&error);
            let first = detail.lines().next().unwrap_or(&message);
            say(format_args!("{first}"));
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
            say(format_args!("cannot start the runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match sse_server::listener::bind(config.listen, config.backlog, config.reuse_port) {
            Ok(listener) => listener,
            Err(error) => {
                say(format_args!("cannot listen on {}: {error}", config.listen));
                return ExitCode::from(EXIT_BIND);
            }
        };
        let server = match sse_server::Server::connect(config).await {
            Ok(server) => server,
            Err(error) => {
                say(format_args!("{error}"));
                return ExitCode::from(match error {
                    StartError::Store(_) | StartError::Nats(_) => EXIT_STORE,
                    StartError::Tls(_) => EXIT_CONFIG,
                });
            }
        };
        let shutdown = match shutdown_signal() {
            Ok(shutdown) => shutdown,
            Err(error) => {
                say(format_args!("cannot install the signal handlers: {error}"));
                return ExitCode::FAILURE;
            }
        };
        match server.run(listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                say(format_args!("{error}"));
                ExitCode::FAILURE
            }
        }
    })
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Installs the SIGTERM and SIGINT handlers now, before the server says it is serving
/// (a signal that came between the two would otherwise kill the process undrained), and
/// returns the future that resolves on the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// The error's text, without the value when it was given for a flag that holds a secret:
/// a key one byte too short must not end up in the journal.
fn redact_secrets(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let detail = error.to_string();
    let secret_flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => SECRET_FLAGS.iter().any(|flag| arg.starts_with(flag)),
        _ => false,
    };
    match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) if secret_flag && !value.is_empty() => detail.replace(value, "<redacted>"),
        _ => detail,
    }
}

/// Flags whose values are secrets.
const SECRET_FLAGS: &[&str] = &["--jwt-secret", "--publish-token"];

/// Standard error that never fails: a log line that cannot be written (the pipe to a log
/// collector closed, a full disk behind a redirect) is dropped. The default writer
/// reports such an error with `eprintln!`, which panics on the same broken pipe and takes
/// the whole server down with every stream it serves.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// One line to standard error before exiting; a closed stderr must not turn a clear exit
/// status into a panic.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "sse-server: {line}");
}
