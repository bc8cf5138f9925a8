//! A stock nginx (Debian's package, `NGINX_BIN` or `/usr/sbin/nginx`) between the clients'
//! proxies and the server, as most deployments run one: an ordinary `proxy_pass` with
//! nginx's default response buffering left on, so only the server's `X-Accel-Buffering:
//! no` keeps events from being held, and a `proxy_read_timeout` that only heartbeats keep
//! an idle stream alive through. Repointed (a move) by rewriting its upstream and
//! reloading; killed with its workers when dropped.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::processes::free_port;
use crate::load::publisher::metric;

/// What nginx waits between two reads from the server before it gives a stream up: three
/// times the plans' heartbeat, so a stream lives only if heartbeats flow through nginx.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// A running nginx on a loopback port of its own.
#[derive(Debug)]
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

/// The configuration users need in front of `sse-server` (README "Behind a reverse
/// proxy"), plus what running unprivileged in a temporary directory takes.
fn config(dir: &std::path::Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let dir = dir.display();
    let read_timeout = READ_TIMEOUT.as_secs();
    format!(
        "daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream sse {{ server {upstream}; }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://sse;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_read_timeout {read_timeout}s;
        }}
    }}
}}
"
    )
}

impl Nginx {
    /// Starts nginx proxying to `upstream` and waits (bounded) until the server's
    /// `/metrics` answers through it.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Nginx> {
        let bin = std::env::var_os("NGINX_BIN").map(PathBuf::from).unwrap_or_else(|| "/usr/sbin/nginx".into());
        if !bin.exists() {
            bail!("nginx is not installed at {}: apt-get install nginx-light (.ci/run does)", bin.display());
        }
        let dir = tempfile::tempdir()?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), addr, upstream))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, so that dropping it kills its workers too (killed alone,
            // the master leaves them running).
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let nginx = Nginx { addr, child, dir };
        nginx.wait_through(upstream).await?;
        Ok(nginx)
    }

    /// Points nginx at a new upstream (a reload: old workers finish their streams' writes
    /// and close them) and waits until requests reach it.
    pub async fn repoint(&self, upstream: SocketAddr) -> anyhow::Result<()> {
        std::fs::write(self.dir.path().join("nginx.conf"), config(self.dir.path(), self.addr, upstream))?;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGHUP)?;
        self.wait_through(upstream).await
    }

    /// Waits until `/metrics` answers through nginx and from `upstream` directly (on a
    /// repoint the old server has exited already, so an answer through nginx comes from
    /// the new one).
    async fn wait_through(&self, upstream: SocketAddr) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let through = metric(self.addr, "process_open_fds").await.is_ok();
            if through && metric(upstream, "process_open_fds").await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
                bail!("nginx on {} did not reach {upstream} within 10 s: {log}", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
