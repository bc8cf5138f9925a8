//! What the browser tier checks on the pages people read (an HTML run report renders), and
//! the README's screenshots of the console and of a report, made by the same code.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use fantoccini::Client;

use super::driver::{Browser, Engine, SessionOptions};
use crate::load::publisher::Publisher;
use crate::real::processes::ServerProcess;

/// Opens the run report at `url` and checks that it renders: the verdict on top, `charts`
/// timeline figures each with an SVG of a real size holding a line of data, no chart that
/// failed to draw, no script, and nothing loaded from anywhere (self-contained).
pub async fn check_report(client: &Client, url: &str, charts: usize) -> anyhow::Result<()> {
    client.goto(url).await.with_context(|| format!("open {url}"))?;
    let script = r#"
        const figures = [...document.querySelectorAll("figure.chart")];
        return {
            verdict: (document.getElementById("verdict") || {}).textContent || "",
            figures: figures.length,
            // A chart is drawn when its SVG has a real size and a line of data: a series
            // is a 2-pixel polyline through three points or more (axes, ticks and grid
            // are 1-pixel lines, a legend's sample is two points).
            drawn: figures.filter((f) => {
                const svg = f.querySelector("svg");
                if (!svg) return false;
                const box = svg.getBoundingClientRect();
                const lines = [...svg.querySelectorAll("polyline[stroke-width='2']")];
                const data = lines.some((l) => (l.getAttribute("points") || "").trim().split(/\s+/).length >= 3);
                return box.width > 300 && box.height > 100 && data;
            }).length,
            errors: document.querySelectorAll(".chart-error").length,
            scripts: document.scripts.length,
            resources: performance.getEntriesByType("resource").length,
        };"#;
    let view = client.execute(script, vec![]).await?;
    let number = |key: &str| view[key].as_u64().unwrap_or(u64::MAX) as usize;
    let verdict = view["verdict"].as_str().unwrap_or_default();
    ensure!(verdict == "PASS" || verdict == "FAIL", "the report shows no verdict: {view}");
    ensure!(number("figures") == charts, "{} charts where {charts} were expected: {view}", number("figures"));
    ensure!(number("drawn") == charts, "only {} of {charts} charts are drawn: {view}", number("drawn"));
    ensure!(number("errors") == 0, "a chart failed to draw: {view}");
    ensure!(number("scripts") == 0 && number("resources") == 0, "the report is not self-contained: {view}");
    Ok(())
}

/// Writes `console.png` (the console page with a few events, a typed one and a reset) and,
/// given a report file, `report.png` (its top) into `out`.
pub async fn screenshots(out: &Path, report: Option<&Path>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &[], None).await?;
    let addr = server.addr;
    let publish = |topic: &'static str, data: &'static str| async move {
        Publisher::connect(addr, topic).await?.publish_for_id(Bytes::from_static(data.as_bytes())).await
    };
    publish("orders", "{\"order\":1041,\"status\":\"paid\"}").await?;
    publish("orders", "{\"order\":1042,\"status\":\"shipped\"}").await?;
    let options = SessionOptions { window: Some((1100, 760)), ..SessionOptions::default() };
    let browser = Browser::start(Engine::Chromium, &options).await?;
    let url = format!("http://{}/?topic=orders&topic=alerts&types=alert&lastEventId=0-0", server.addr);
    browser.client.goto(&url).await?;
    wait_for_text(&browser.client, "resets", "1").await?;
    publish("alerts&event=alert", "disk 91% full on db-2\nsecond line of the alert").await?;
    publish("orders", "{\"order\":1043,\"status\":\"paid\"}").await?;
    wait_for_text(&browser.client, "count", "4").await?;
    let form = browser.client.find(fantoccini::Locator::Id("pub-data")).await?;
    form.send_keys("{\"order\":1044,\"status\":\"new\"}").await?;
    std::fs::write(out.join("console.png"), browser.client.screenshot().await?)?;
    if let Some(report) = report {
        browser.client.set_window_size(1000, 1400).await?;
        let path = std::fs::canonicalize(report)?;
        browser.client.goto(&format!("file://{}", path.display())).await?;
        std::fs::write(out.join("report.png"), browser.client.screenshot().await?)?;
    }
    browser.quit().await
}

/// Waits (at most 15 s) until the element `id` reads `want`.
pub async fn wait_for_text(client: &Client, id: &str, want: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = client.find(fantoccini::Locator::Id(id)).await?.text().await?;
        if text == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("#{id} reads {text:?}, not {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
