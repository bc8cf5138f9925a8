//! A WebDriver server (chromedriver or geckodriver) on a free loopback port and one
//! headless browser session on it, ended when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Map, Value};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::real::processes::{free_port, workspace_root};

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
        }
    }

    /// The WebDriver server: `CHROMEDRIVER` / `GECKODRIVER`, else Debian's chromedriver or
    /// the geckodriver `ci/install-geckodriver.sh` built into `.tools/`.
    fn driver_binary(self) -> anyhow::Result<PathBuf> {
        let (var, default) = match self {
            Engine::Chromium => ("CHROMEDRIVER", PathBuf::from("/usr/bin/chromedriver")),
            Engine::Firefox => ("GECKODRIVER", workspace_root().join(".tools/geckodriver/bin/geckodriver")),
        };
        let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
        if !path.is_file() {
            let install = match self {
                Engine::Chromium => "apt-get install chromium chromium-driver",
                Engine::Firefox => "apt-get install firefox-esr, then ci/install-geckodriver.sh",
            };
            bail!("no {} WebDriver at {} ({install}, or set {var})", self.name(), path.display());
        }
        Ok(path)
    }

    /// The browser binary (the real one, not Debian's wrapper script for Chromium).
    fn browser_binary(self) -> &'static str {
        match self {
            Engine::Chromium if std::path::Path::new("/usr/lib/chromium/chromium").is_file() => {
                "/usr/lib/chromium/chromium"
            }
            Engine::Chromium => "/usr/bin/chromium",
            Engine::Firefox => "/usr/bin/firefox-esr",
        }
    }
}

/// What the session may do beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// A CA certificate (PEM) the browser trusts for servers: added to the session's own
    /// NSS database (`certutil`, Debian's `libnss3-tools`), which both engines read: the
    /// Firefox profile's, Chromium's under the `HOME` its driver is given.
    pub trust_ca: Option<PathBuf>,
    /// Window size in CSS pixels (screenshots).
    pub window: Option<(u32, u32)>,
}

/// A running WebDriver server with one browser session.
pub struct Browser {
    pub engine: Engine,
    pub client: Client,
    driver: DriverGroup,
    _profile: tempfile::TempDir,
}

/// The WebDriver server, started in a process group of its own, which the browser's
/// processes join: dropping this kills the whole group, so neither a failed test nor a
/// start that failed half way leaves a browser behind (one whose `EventSource` would keep
/// reconnecting to a port a later test's server may get).
struct DriverGroup(Child);

impl Drop for DriverGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

impl Browser {
    /// The process group the driver and the browser's processes run in.
    pub fn process_group(&self) -> Option<u32> {
        self.driver.0.id()
    }
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("engine", &self.engine).finish_non_exhaustive()
    }
}

/// How long the WebDriver server and the browser may take to start.
const START_PATIENCE: Duration = Duration::from_secs(30);

impl Browser {
    /// Starts the engine's WebDriver server on loopback and a headless session.
    pub async fn start(engine: Engine, options: &SessionOptions) -> anyhow::Result<Browser> {
        let port = free_port()?;
        let profile = tempfile::tempdir()?;
        let mut command = Command::new(engine.driver_binary()?);
        if let Some(ca) = &options.trust_ca {
            let nssdb = match engine {
                Engine::Chromium => {
                    // Chromium reads $HOME/.pki/nssdb: its driver gets the profile as HOME.
                    command.env("HOME", profile.path());
                    profile.path().join(".pki/nssdb")
                }
                Engine::Firefox => profile.path().to_owned(),
            };
            trust(&nssdb, ca).await?;
        }
        match engine {
            Engine::Chromium => command.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1"),
            Engine::Firefox => command.args(["--host", "127.0.0.1", "--port", &port.to_string()]),
        };
        let mut driver = DriverGroup(
            command.stdout(Stdio::null()).stderr(Stdio::null()).process_group(0).kill_on_drop(true).spawn()?,
        );
        let capabilities = capabilities(engine, profile.path())?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + START_PATIENCE;
        let client = loop {
            let attempt =
                ClientBuilder::new(HttpConnector::new()).capabilities(capabilities.clone()).connect(&url).await;
            match attempt {
                Ok(client) => break client,
                Err(error) if Instant::now() > deadline => {
                    bail!("no {} session within {START_PATIENCE:?}: {error}", engine.name())
                }
                Err(_) => {
                    // Another driver may have won the port: never talk to a driver not ours.
                    if let Some(status) = driver.0.try_wait()? {
                        bail!("the {} WebDriver server exited ({status}) before a session began", engine.name());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
            }
        };
        if let Some((width, height)) = options.window {
            client.set_window_size(width, height).await.context("set the window size")?;
        }
        Ok(Browser { engine, client, driver, _profile: profile })
    }

    /// Ends the session (the browser quits), then the WebDriver server and anything left
    /// in its process group.
    pub async fn quit(self) -> anyhow::Result<()> {
        // Firefox can take seconds to shut down on a loaded machine; the group is killed
        // on drop whatever happens.
        let ended = tokio::time::timeout(Duration::from_secs(30), self.client.clone().close()).await;
        drop(self);
        ended.context("the browser did not quit within 30 s")?.context("end the session")
    }
}

fn capabilities(engine: Engine, profile: &std::path::Path) -> anyhow::Result<Map<String, Value>> {
    let mut capabilities = Map::new();
    let (key, value) = match engine {
        Engine::Chromium => (
            "goog:chromeOptions",
            json!({
                "binary": engine.browser_binary(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-extensions",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.to_str().context("a UTF-8 path")?),
                ],
            }),
        ),
        Engine::Firefox => (
            "moz:firefoxOptions",
            json!({
                "binary": engine.browser_binary(),
                "args": ["-headless", "-profile", profile.to_str().context("a UTF-8 path")?],
                "prefs": {
                    // No updates, telemetry or first-run pages reaching for the network.
                    "app.update.enabled": false,
                    "browser.shell.checkDefaultBrowser": false,
                    "datareporting.policy.dataSubmissionEnabled": false,
                    "network.captive-portal-service.enabled": false,
                },
            }),
        ),
    };
    capabilities.insert(key.to_owned(), value);
    Ok(capabilities)
}

/// Makes an NSS database at `dir` that trusts `ca` to identify servers.
async fn trust(dir: &std::path::Path, ca: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let db = format!("sql:{}", dir.to_str().context("a UTF-8 path")?);
    let ca = ca.to_str().context("a UTF-8 path")?;
    for args in
        [vec!["-N", "-d", &db, "--empty-password"], vec!["-A", "-d", &db, "-n", "sse-test-ca", "-t", "C,,", "-i", ca]]
    {
        let output = Command::new("certutil")
            .args(&args)
            .output()
            .await
            .context("run certutil (apt-get install libnss3-tools)")?;
        if !output.status.success() {
            bail!("certutil {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        }
    }
    Ok(())
}
