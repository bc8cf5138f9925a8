//! The page side of a browser client: [`Recorder`] puts `recorder.js` into the current
//! page, opens `EventSource`s by name and drains what they saw; [`to_seen`] turns one
//! source's records into the oracle's [`Seen`] list.

use std::time::Duration;

use anyhow::{bail, Context};
use fantoccini::Client;
use serde_json::{json, Value};
use sse_plan::record::{Received, Seen};
use tokio::time::Instant;

const SCRIPT: &str = include_str!("recorder.js");

/// What one `EventSource` saw, as the page recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRecord {
    /// The name the test gave the source.
    pub source: String,
    pub kind: Kind,
    /// When, from the recorder's [`Recorder::origin`] (the page's clock, read against
    /// ours when the recorder was put in).
    pub at: Duration,
    /// The event's type (`message`, a typed event's name, `open`, `error`).
    pub event_type: String,
    /// `lastEventId` after the event.
    pub id: String,
    pub data: Option<String>,
    /// `readyState` right after: 0 connecting, 1 open, 2 closed for good.
    pub ready_state: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Open,
    Error,
    Event,
}

impl PageRecord {
    /// Reads one record; `origin_ms` is the page's clock at the recorder's origin.
    fn from_json(value: &Value, origin_ms: f64) -> anyhow::Result<PageRecord> {
        let text = |key: &str| value[key].as_str().map(str::to_owned);
        let kind = match value["kind"].as_str() {
            Some("open") => Kind::Open,
            Some("error") => Kind::Error,
            Some("event") => Kind::Event,
            other => bail!("a record of unknown kind {other:?}"),
        };
        Ok(PageRecord {
            source: text("source").context("source")?,
            kind,
            at: Duration::from_secs_f64(((value["at"].as_f64().context("at")? - origin_ms) / 1e3).max(0.0)),
            event_type: text("type").unwrap_or_default(),
            id: text("id").unwrap_or_default(),
            data: text("data"),
            ready_state: value["state"].as_u64().unwrap_or(0) as u8,
        })
    }
}

/// The recorder in one page of a browser session.
#[derive(Debug)]
pub struct Recorder {
    client: Client,
    /// Our clock when the page's read `origin_ms` (ms): records are timed from here.
    pub origin: Instant,
    origin_ms: f64,
    /// Everything drained so far, in the order the page recorded it.
    pub records: Vec<PageRecord>,
}

impl Recorder {
    /// Puts the recorder into the page the session shows now (a page of the origin the
    /// streams should come from).
    pub async fn install(client: &Client) -> anyhow::Result<Recorder> {
        client.execute(SCRIPT, vec![]).await.context("put the recorder into the page")?;
        // The page's clock read between two of ours, taken at the midpoint.
        let before = Instant::now();
        let clock = client.execute("return performance.timeOrigin + performance.now();", vec![]).await?;
        let origin = before + (Instant::now() - before) / 2;
        let origin_ms = clock.as_f64().context("the page's clock")?;
        Ok(Recorder { client: client.clone(), origin, origin_ms, records: Vec::new() })
    }

    /// Opens an `EventSource` named `name` on `url` (relative to the page), with
    /// `withCredentials` if asked, listening for `types` besides `message`.
    pub async fn open(&self, name: &str, url: &str, with_credentials: bool, types: &[&str]) -> anyhow::Result<()> {
        let args = vec![json!(name), json!(url), json!({ "withCredentials": with_credentials }), json!(types)];
        self.client
            .execute("window.__sse.open(arguments[0], arguments[1], arguments[2], arguments[3]);", args)
            .await
            .with_context(|| format!("open EventSource {name} on {url}"))?;
        Ok(())
    }

    /// Closes the source for good (`EventSource.close()`).
    pub async fn close(&self, name: &str) -> anyhow::Result<()> {
        self.client.execute("window.__sse.close(arguments[0]);", vec![json!(name)]).await?;
        Ok(())
    }

    /// Takes what the page recorded since the last drain into [`Recorder::records`].
    pub async fn drain(&mut self) -> anyhow::Result<&[PageRecord]> {
        let value = self.client.execute("return window.__sse.drain();", vec![]).await?;
        let before = self.records.len();
        for item in value.as_array().context("the drain is a list")? {
            self.records.push(PageRecord::from_json(item, self.origin_ms)?);
        }
        Ok(&self.records[before..])
    }

    /// Drains until `done` holds for the records so far, polling every 50 ms for at most
    /// `within`; the error lists what the page saw.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&[PageRecord]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.drain().await?;
            if done(&self.records) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the page did not see {what} within {within:?}; it saw {:#?}", self.records);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The events (not `open`/`error`) one source saw.
    pub fn events<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a PageRecord> + 'a {
        self.of(source, Kind::Event)
    }

    /// The records of one kind one source has.
    pub fn of<'a>(&'a self, source: &'a str, kind: Kind) -> impl Iterator<Item = &'a PageRecord> + 'a {
        self.records.iter().filter(move |r| r.source == source && r.kind == kind)
    }
}

/// One source's records as the oracle reads a client: its events, and each `reset`
/// notice (an event of type `reset`, whose data is `{"reason":"…"}`), timed from the
/// recorder's origin.
pub fn to_seen(records: &[PageRecord], source: &str) -> Vec<Seen> {
    records
        .iter()
        .filter(|r| r.source == source && r.kind == Kind::Event)
        .map(|r| {
            let at = r.at;
            let data = r.data.clone().unwrap_or_default();
            if r.event_type == "reset" {
                let reason = serde_json::from_str::<Value>(&data)
                    .ok()
                    .and_then(|v| v["reason"].as_str().map(str::to_owned))
                    .unwrap_or(data);
                Seen::Reset { at, reason }
            } else {
                Seen::Event(Received { at, id: r.id.clone(), data })
            }
        })
        .collect()
}
