//! Process control for real runs: the Toxiproxy server (started on loopback, or an
//! external one named by `TOXIPROXY_URL`) and `sse-server` children on their own port and
//! data directory, with signals sent through `nix`. Children are killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::toxiproxy::Toxiproxy;
use crate::load::publisher::metric;

/// A free loopback port (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The workspace's root directory (where `.tools/` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("chaos/ sits in the workspace").to_owned()
}

/// A running Toxiproxy: ours (killed on drop, its output kept in a log file) or an
/// external one.
#[derive(Debug)]
pub struct ToxiproxyServer {
    pub client: Toxiproxy,
    child: Option<Child>,
    /// Where our Toxiproxy writes its log (removed with the server).
    log: Option<tempfile::NamedTempFile>,
}

impl ToxiproxyServer {
    /// Uses `TOXIPROXY_URL` (loopback only) if set; else starts the installed server
    /// (`TOXIPROXY_BIN`, or `.tools/bin/toxiproxy-server` from `ci/install-toxiproxy.sh`)
    /// on a free loopback port, its toxics seeded with `seed`.
    pub async fn start(seed: u64) -> anyhow::Result<ToxiproxyServer> {
        if let Ok(url) = std::env::var("TOXIPROXY_URL") {
            let api: SocketAddr = url.trim_start_matches("http://").trim_end_matches('/').parse()?;
            if !api.ip().is_loopback() {
                bail!("TOXIPROXY_URL must be on loopback, got {api}");
            }
            let client = Toxiproxy { api };
            client.version().await.context("the external Toxiproxy does not answer")?;
            return Ok(ToxiproxyServer { client, child: None, log: None });
        }
        let bin = std::env::var_os("TOXIPROXY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".tools/bin/toxiproxy-server"));
        if !bin.exists() {
            bail!("Toxiproxy is not installed at {}: run ci/install-toxiproxy.sh", bin.display());
        }
        let port = free_port()?;
        let log = tempfile::Builder::new().prefix("toxiproxy-").suffix(".log").tempfile()?;
        // One descriptor (one file offset) for both streams, so a crash on stderr lands after
        // the last lines on stdout instead of over the start of the file.
        let out = log.reopen()?;
        let child = Command::new(&bin)
            .args(["-host", "127.0.0.1", "-port", &port.to_string(), "-seed", &seed.to_string()])
            .stderr(out.try_clone()?)
            .stdout(out)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let client = Toxiproxy { api: ([127, 0, 0, 1], port).into() };
        let server = ToxiproxyServer { client, child: Some(child), log: Some(log) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.client.version().await.is_err() {
            if Instant::now() > deadline {
                bail!("Toxiproxy did not answer within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }
}

impl ToxiproxyServer {
    /// Whether Toxiproxy still serves: our process has not exited and the API answers
    /// within 5 s. The error says which, with the end of its log.
    pub async fn health(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
            bail!("Toxiproxy exited ({status}); the end of its log:\n{}", self.log_tail());
        }
        match tokio::time::timeout(HEALTH_WITHIN, self.client.version()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => bail!("Toxiproxy's API fails ({error:#}); the end of its log:\n{}", self.log_tail()),
            Err(_) => bail!(
                "Toxiproxy's API did not answer within {HEALTH_WITHIN:?}; the end of its log:\n{}",
                self.log_tail()
            ),
        }
    }

    /// The last lines of our Toxiproxy's log (empty for an external one).
    pub fn log_tail(&self) -> String {
        let Some(log) = &self.log else { return String::new() };
        let bytes = std::fs::read(log.path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }
}

/// How long a health check waits for Toxiproxy's `/version`: it answers in
/// milliseconds, whatever its proxies are doing.
const HEALTH_WITHIN: Duration = Duration::from_secs(5);
/// Log lines a failure quotes.
const LOG_TAIL: usize = 20;

impl Drop for ToxiproxyServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `sse-server` binary: `SSE_SERVER_BIN`, else beside the running executable (the
/// target directory cargo built into).
pub fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SSE_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("sse-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("no sse-server binary beside {}: run `cargo build -p sse-server` or set SSE_SERVER_BIN", exe.display())
}

/// An `sse-server` child on a fixed port and data directory; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    data_dir: PathBuf,
    args: Vec<String>,
    /// An open-file limit set with `prlimit` (soft = hard).
    nofile: Option<u64>,
}

impl ServerProcess {
    /// Starts the server (under an open-file limit, if given) and waits until it answers.
    pub async fn start(data_dir: &Path, args: &[String], nofile: Option<u64>) -> anyhow::Result<ServerProcess> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        Self::start_on(addr, data_dir, args, nofile).await
    }

    async fn start_on(
        addr: SocketAddr,
        data_dir: &Path,
        args: &[String],
        nofile: Option<u64>,
    ) -> anyhow::Result<ServerProcess> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.with_extension("log"))?;
        let bin = server_binary()?;
        // `prlimit` sets the limit on itself, then execs the server: the pid is the server's.
        let mut command = match nofile {
            Some(n) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={n}:{n}")).arg("--").arg(&bin);
                command
            }
            None => Command::new(&bin),
        };
        let child = command
            .args(["--listen", &addr.to_string(), "--data-dir", data_dir.to_str().context("a UTF-8 path")?])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut server = ServerProcess { child, addr, data_dir: data_dir.to_owned(), args: args.to_vec(), nofile };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Waits (at most 20 s: cluster mode waits up to 15 s for its stream) until `/metrics`
    /// answers (over TLS: until the port accepts); fails at once if the process exited.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("sse-server on {} exited before it was ready ({status})", self.addr);
            }
            if self.args.iter().any(|a| a == "--tls-cert") {
                // Over TLS the plain `/metrics` read cannot answer: a bound listener is ready.
                if TcpStream::connect(self.addr).await.is_ok() {
                    return Ok(());
                }
            } else if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), metric(self.addr, "sse_streams")).await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("sse-server on {} did not become ready within 20 s", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), signal).context("send a signal")
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits up to `within` for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("sse-server did not exit within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts a new process on the same port, data directory and flags (after this one
    /// exited or was killed).
    pub async fn restart(self) -> anyhow::Result<ServerProcess> {
        let (addr, dir, args, nofile) = (self.addr, self.data_dir.clone(), self.args.clone(), self.nofile);
        drop(self);
        Self::start_on(addr, &dir, &args, nofile).await
    }

    /// Starts the process again on the same port and data directory, with `args`, once
    /// this one exited or was killed.
    pub async fn start_again(&mut self, args: &[String]) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (addr, dir) = (self.addr, self.data_dir.clone());
        *self = Self::start_on(addr, &dir, args, self.nofile).await?;
        Ok(())
    }

    /// Open file descriptors, counted in `/proc/PID/fd` (independently of `/metrics`).
    pub fn open_fds(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))?.count())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until process `pid`'s state letter in `/proc/PID/stat` satisfies `ok`:
/// a signal that stops or continues a process is read back before it counts.
pub async fn wait_pid_state(pid: u32, ok: impl Fn(char) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()).unwrap_or('?');
        if ok(state) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "process {pid}'s state stayed {state}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
