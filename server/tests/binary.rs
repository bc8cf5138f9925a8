//! The `sse-server` binary as a user runs it: flags, start-up log, serving, and a drain
//! on SIGTERM that ends the process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sse-server");

/// A server process killed when dropped: a failing test leaves no server behind.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_bad_flag_exits_with_status_64_and_one_line() {
    let output = output_within(Command::new(BIN).args(["--heartbeat", "soon"]).env_clear());
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("sse-server: "), "{stderr}");
    assert!(stderr.contains("soon"), "the bad value is named (only secrets are redacted): {stderr}");
}

/// `--help` and `--version` are answers, not errors: printed on stdout, status 0.
#[test]
fn help_and_version_print_on_stdout_and_exit_0() {
    for flag in ["--help", "--version"] {
        let output = output_within(Command::new(BIN).arg(flag));
        assert_eq!(output.status.code(), Some(0), "{flag}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("sse-server"), "{flag}: {stdout}");
        assert!(output.stderr.is_empty(), "{flag}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let help = output_within(Command::new(BIN).arg("--help"));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--data-dir"), "the help lists the flags");
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = output_within(Command::new(BIN).args(["--store", "memory", "--listen", &addr]).env_clear());
    assert_eq!(output.status.code(), Some(71));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen on"));
}

#[test]
fn the_binary_serves_streams_and_drains_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let args = ["--data-dir", dir, "--listen", "127.0.0.1:0", "--seed", "7", "--retry", "1s", "--retry-jitter", "1s"];
    let (mut child, mut log, line) = serving(&args);
    assert!(line.contains("\"seed\":7"), "{line}");
    assert!(line.contains("\"max_connections\":"), "the connection limit is logged: {line}");
    let addr = listen_addr(&line);

    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /events?topic=cli HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut seen = read_until(&mut stream, "retry: 1000");
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");

    publish(addr, "cli", "hello");
    seen += &read_until(&mut stream, "data: hello\n\n");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let goodbye = read_until(&mut stream, "0\r\n\r\n");
    let retry: u64 = goodbye.split("retry: ").nth(1).unwrap().split('\n').next().unwrap().parse().unwrap();
    assert!((1000..=2000).contains(&retry), "{goodbye}");
    assert_eq!(exit_within(&mut child, "SIGTERM").code(), Some(0));
    let mut rest = String::new();
    log.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("SIGTERM received") && rest.contains("drained"), "{rest}");
    assert!(rest.contains("event store closed"), "the store is closed on the way out: {rest}");
}

/// An idle server sleeps: with no client and nothing left to sync, no thread polls for
/// work, under `--fsync interval` (whose syncs are timed) too. A busy wait would show as
/// most of a core's CPU time over the window; the budget is a tenth of it.
#[test]
fn an_idle_server_uses_almost_no_cpu() {
    const WINDOW: Duration = Duration::from_secs(1);
    /// Clock ticks (a hundredth of a second each on Linux).
    const BUDGET: u64 = 10;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let (child, _log, line) = serving(&["--data-dir", dir, "--listen", "127.0.0.1:0", "--fsync", "interval:20ms"]);
    let addr = listen_addr(&line);
    // The first publish makes the id reservation durable; the second waits for a timed sync.
    publish(addr, "idle", "one");
    publish(addr, "idle", "two");
    let before = cpu_ticks(child.id());
    std::thread::sleep(WINDOW);
    let used = cpu_ticks(child.id()) - before;
    assert!(used <= BUDGET, "{used} ticks of CPU time in {WINDOW:?} with nothing to do");
}

/// A restart says what the data directory holds: its events and topics, the last id, and
/// the next (right after it: a clean stop narrows the id reservation to what was used).
#[test]
fn a_restart_logs_what_the_store_holds() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let (mut child, _log, line) = serving(&["--data-dir", dir, "--listen", "127.0.0.1:0"]);
    let addr = listen_addr(&line);
    for (topic, body) in [("a", "one"), ("b", "two"), ("a", "three")] {
        publish(addr, topic, body);
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(exit_within(&mut child, "SIGTERM").code(), Some(0));
    let (_again, mut log) = started(&["--data-dir", dir, "--listen", "127.0.0.1:0"]);
    let opened = line_with(&mut log, "\"message\":\"event store opened\"");
    for field in ["\"events\":3", "\"topics\":2", "\"last_id\":3", "\"next_id\":4"] {
        assert!(opened.contains(field), "{field} in {opened}");
    }
}

/// The address in a "serving" log line.
fn listen_addr(serving: &str) -> SocketAddr {
    serving.split("\"listen\":\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap()
}

/// Publishes `body` to `topic` and waits for the 201.
fn publish(addr: SocketAddr, topic: &str, body: &str) {
    let mut publisher = TcpStream::connect(addr).unwrap();
    publisher.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "POST /events?topic={topic} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    publisher.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    publisher.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

/// CPU time (user and system) process `pid` has used, in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces) in parentheses; utime and
    // stime are the 14th and 15th of the whole line.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// How long a test waits for the next log line.
const LOG_PATIENCE: Duration = Duration::from_secs(10);

/// The first log line containing `marker` (start-up lines come before it); fails if the
/// log ends first or stays silent for `LOG_PATIENCE`.
fn line_with(log: &mut BufReader<ChildStderr>, marker: &str) -> String {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    for _ in 0..20 {
        if log.buffer().is_empty() {
            let fd = std::os::fd::AsFd::as_fd(log.get_ref());
            let timeout = PollTimeout::try_from(LOG_PATIENCE).unwrap();
            let ready = poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], timeout).unwrap();
            assert!(ready > 0, "no log line within {LOG_PATIENCE:?} while waiting for {marker:?}");
        }
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "the log ended before {marker:?}");
        if line.contains(marker) {
            return line;
        }
    }
    panic!("no log line with {marker:?}");
}

fn read_until(stream: &mut TcpStream, marker: &str) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&text).contains(marker) {
        let n = stream.read(&mut buf).expect("the server answers in time");
        assert!(n > 0, "closed before {marker:?}: {}", String::from_utf8_lossy(&text));
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// With the in-memory store every start is a new history: a pinned seed must not give
/// two processes the same epoch, or ids from the first would look valid to the second.
#[test]
fn each_process_starts_a_new_epoch_even_with_a_pinned_seed() {
    let epoch = || {
        let (mut child, _log, line) = serving(&["--store", "memory", "--listen", "127.0.0.1:0", "--seed", "7"]);
        child.kill().unwrap();
        child.wait().unwrap();
        line.split("\"epoch\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned()
    };
    assert_ne!(epoch(), epoch());
}

/// `--reuse-port`: two processes share one address and the kernel spreads new streams
/// over both (each names its own epoch in a stream's opening position); once one is
/// killed, the other takes every new stream. Without the flag the address is taken.
#[test]
fn processes_with_reuse_port_share_one_address_and_outlive_each_other() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let start = |epoch: &str| serving(&["--store", "memory", "--listen", &addr, "--reuse-port", "--epoch", epoch]);
    let (mut first, _first_log, _) = start("0000000a");
    let (mut second, _second_log, _) = start("0000000b");
    // The epoch in the opening position (`id: <epoch>-0`) of a new stream.
    let epoch_of_a_new_stream = || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"GET /events?topic=shared HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let opening = read_until(&mut stream, "-0\n");
        opening.split("id: ").nth(1).unwrap().split('-').next().unwrap().to_owned()
    };
    // 40 streams all on one process would happen with probability 2^-39.
    let epochs: std::collections::BTreeSet<String> = (0..40).map(|_| epoch_of_a_new_stream()).collect();
    assert_eq!(epochs, ["0000000a".to_owned(), "0000000b".to_owned()].into(), "both processes take streams");
    first.kill().unwrap();
    first.wait().unwrap();
    for _ in 0..20 {
        assert_eq!(epoch_of_a_new_stream(), "0000000b", "the survivor takes every new stream");
    }
    let without = output_within(Command::new(BIN).args(["--store", "memory", "--listen", &addr]).env_clear());
    assert_eq!(without.status.code(), Some(71), "without --reuse-port the address is taken");
    second.kill().unwrap();
    second.wait().unwrap();
}

/// A data directory that cannot be used is a clear error and status 74, never a panic:
/// held by another server, or not writable.
#[test]
fn an_unusable_data_dir_is_a_clear_error_with_status_74() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    // The first server's log stays open while the second tries: it must still be serving.
    let (mut first, _first_log, _) = serving(&["--data-dir", dir, "--listen", "127.0.0.1:0"]);
    let second = output_within(Command::new(BIN).args(["--data-dir", dir, "--listen", "127.0.0.1:0"]).env_clear());
    assert!(first.try_wait().unwrap().is_none(), "the first server is still running");
    first.kill().unwrap();
    first.wait().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(74), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A path under a regular file can never be a directory, whoever runs the test.
    let file = data.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("data");
    let output = output_within(
        Command::new(BIN).args(["--data-dir", under_file.to_str().unwrap(), "--listen", "127.0.0.1:0"]).env_clear(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(74), "{stderr}");
    assert!(stderr.contains("cannot create the data directory"), "{stderr}");
}

/// A server whose log pipe closes (a log collector restarted) keeps serving and still
/// drains cleanly: a log line it cannot write is dropped, never a panic.
#[test]
fn a_closed_log_pipe_does_not_stop_the_server() {
    let mut child = Running(
        Command::new(BIN)
            .args(["--store", "memory", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .env_clear()
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = line_with(&mut BufReader::new(child.stderr.take().unwrap()), "\"message\":\"serving\"");
    let addr: SocketAddr = line.split("\"listen\":\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    // The reader is gone: every later log line meets a broken pipe. The server still
    // answers, then drains.
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(exit_within(&mut child, "SIGTERM").code(), Some(0), "the drain finished despite the closed log");
}

/// How long any process under test may take to exit by itself: long enough for a loaded
/// machine, short enough that a process that never exits fails the test, not the run.
const EXIT_BOUND: Duration = Duration::from_secs(20);

/// Runs `command` to its end, capturing its output, and fails if it is still running
/// after `EXIT_BOUND` (it is killed then). The pipes are read after the exit, so this is
/// for commands that print less than a pipe holds (64 KiB), as every one here does.
/// Starts the binary with `args` and a JSON log, and waits for its "serving" line; the
/// log stays open as long as the returned reader lives.
fn serving(args: &[&str]) -> (Running, BufReader<ChildStderr>, String) {
    let (child, mut log) = started(args);
    let line = line_with(&mut log, "\"message\":\"serving\"");
    (child, log, line)
}

/// Starts the binary with `args` and a JSON log, read through the returned reader.
fn started(args: &[&str]) -> (Running, BufReader<ChildStderr>) {
    let mut child = Running(
        Command::new(BIN).args(args).args(["--log-format", "json"]).env_clear().stderr(Stdio::piped()).spawn().unwrap(),
    );
    let log = BufReader::new(child.stderr.take().unwrap());
    (child, log)
}

fn output_within(command: &mut Command) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let status = exit_within(&mut child, "start");
    let mut output = Output { status, stdout: Vec::new(), stderr: Vec::new() };
    child.stdout.take().unwrap().read_to_end(&mut output.stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut output.stderr).unwrap();
    output
}

/// Waits for `child` to exit by itself, at most `EXIT_BOUND` after `since`; kills it and
/// fails the test otherwise.
fn exit_within(child: &mut Child, since: &str) -> ExitStatus {
    const POLL: Duration = Duration::from_millis(20);
    for _ in 0..EXIT_BOUND.as_millis() / POLL.as_millis() {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the process was still running {EXIT_BOUND:?} after {since}");
}

/// A certificate or key that cannot be loaded stops the start with status 78 and says
/// which file is wrong.
#[test]
fn an_unusable_tls_certificate_is_a_clear_error_with_status_78() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls");
    let key = fixtures.join("server.key");
    // The key given as the certificate: a PEM file, but no certificate in it.
    let output = output_within(
        Command::new(BIN)
            .args(["--store", "memory", "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&key)
            .arg("--tls-key")
            .arg(&key)
            .env_clear(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("no certificate in") && stderr.contains("server.key"), "{stderr}");
}

/// A secret refused at start (too short, a space in a token list) is not printed: the
/// error names the flag and the rule, never the value.
#[test]
fn a_refused_secret_is_not_echoed() {
    for (flag, value) in [("--jwt-secret", "a-real-key-one-byte-too-short!!"), ("--publish-token", "has a space")] {
        let output = output_within(Command::new(BIN).args([flag, value]).env_clear());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(flag) && stderr.contains("<redacted>"), "{stderr}");
        assert!(!stderr.contains(value), "{stderr}");
    }
    let output = output_within(Command::new(BIN).env_clear().env("SSE_PUBLISH_TOKENS", "good-token-1, bad"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(!stderr.contains("good-token-1") && !stderr.contains("bad"), "{stderr}");
}
