//! A small typed async client for Toxiproxy's HTTP API (written here rather than using
//! `toxiproxy_rust`, which blocks, lacks `reset_peer` and ignores 4xx answers). Every
//! call checks the status, so an API error is an error, never a silent no-op; and
//! [`Toxiproxy::add_toxic`] reads the toxic back and compares it before returning, so a
//! fault that did not apply cannot let a plan pass vacuously.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Longest wait for one API call.
const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which way a toxic acts: `Downstream` is server → client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upstream,
    Downstream,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        }
    }
}

/// One toxic: its name, type (`latency`, `reset_peer`, `timeout`, …), direction and
/// numeric attributes, exactly as the API takes them.
#[derive(Debug, Clone)]
pub struct Toxic {
    pub name: String,
    pub kind: &'static str,
    pub stream: Direction,
    pub attributes: Vec<(&'static str, u64)>,
}

impl Toxic {
    /// A toxic with its own name (several of one kind on a proxy).
    pub fn named(name: String, kind: &'static str, stream: Direction, attributes: &[(&'static str, u64)]) -> Toxic {
        Toxic { name, kind, stream, attributes: attributes.to_vec() }
    }

    /// A toxic acting on every connection of the proxy.
    pub fn new(kind: &'static str, stream: Direction, attributes: &[(&'static str, u64)]) -> Toxic {
        Toxic { name: format!("{kind}_{}", stream.as_str()), kind, stream, attributes: attributes.to_vec() }
    }

    fn to_json(&self) -> Value {
        let attributes: serde_json::Map<String, Value> =
            self.attributes.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        json!({ "name": self.name, "type": self.kind, "stream": self.stream.as_str(), "toxicity": 1.0, "attributes": attributes })
    }

    /// Whether the API's view of a toxic is this one.
    fn matches(&self, seen: &Value) -> bool {
        seen["name"] == self.name
            && seen["type"] == self.kind
            && seen["stream"] == self.stream.as_str()
            && seen["toxicity"].as_f64() == Some(1.0)
            && self.attributes.iter().all(|(k, v)| seen["attributes"][*k].as_u64() == Some(*v))
    }
}

/// A Toxiproxy API on loopback.
#[derive(Debug, Clone, Copy)]
pub struct Toxiproxy {
    pub api: SocketAddr,
}

impl Toxiproxy {
    /// One API call, bounded: Toxiproxy answers in milliseconds, but removing a toxic waits
    /// for the data it holds to move on, which a loaded machine can stretch to seconds.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<(StatusCode, Value)> {
        match tokio::time::timeout(API_TIMEOUT, self.call_unbounded(method.clone(), path, body)).await {
            Ok(answer) => answer,
            Err(_) => bail!("Toxiproxy {method} {path} did not answer within {API_TIMEOUT:?}"),
        }
    }

    async fn call_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let tcp = TcpStream::connect(self.api).await.context("connect to the Toxiproxy API")?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", "toxiproxy")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("Toxiproxy {method} {path} answered {status}: {}", String::from_utf8_lossy(&bytes));
        }
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok((status, value))
    }

    /// The server's version (also a liveness check).
    pub async fn version(&self) -> anyhow::Result<String> {
        let (_, value) = self.call(Method::GET, "/version", None).await?;
        Ok(value["version"].as_str().map_or_else(|| value.to_string(), str::to_owned))
    }

    /// Creates a proxy from an ephemeral loopback port to `upstream`; returns where it
    /// listens.
    pub async fn create_proxy(&self, name: &str, upstream: SocketAddr) -> anyhow::Result<SocketAddr> {
        let body = json!({ "name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string(), "enabled": true });
        let (_, value) = self.call(Method::POST, "/proxies", Some(body)).await?;
        let listen = value["listen"].as_str().context("the proxy's listen address")?;
        Ok(listen.parse()?)
    }

    /// Adds a toxic, then reads the proxy's toxics back and fails unless it is there as
    /// asked.
    pub async fn add_toxic(&self, proxy: &str, toxic: &Toxic) -> anyhow::Result<()> {
        self.call(Method::POST, &format!("/proxies/{proxy}/toxics"), Some(toxic.to_json())).await?;
        let (_, list) = self.call(Method::GET, &format!("/proxies/{proxy}/toxics"), None).await?;
        let applied = list.as_array().is_some_and(|all| all.iter().any(|t| toxic.matches(t)));
        if !applied {
            bail!("toxic {} is not applied as asked; the proxy has: {list}", toxic.name);
        }
        Ok(())
    }

    /// Removes a toxic and checks that it is gone.
    pub async fn remove_toxic(&self, proxy: &str, name: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, &format!("/proxies/{proxy}/toxics/{name}"), None).await?;
        let (_, list) = self.call(Method::GET, &format!("/proxies/{proxy}/toxics"), None).await?;
        if list.as_array().is_some_and(|all| all.iter().any(|t| t["name"] == name)) {
            bail!("toxic {name} is still applied after removal: {list}");
        }
        Ok(())
    }

    /// Points a proxy at another upstream (a service that moved), reads it back, and
    /// returns where it listens now (it must be where it listened before).
    pub async fn set_upstream(&self, name: &str, upstream: SocketAddr) -> anyhow::Result<SocketAddr> {
        let body = json!({ "upstream": upstream.to_string() });
        self.call(Method::POST, &format!("/proxies/{name}"), Some(body)).await?;
        let (_, proxy) = self.call(Method::GET, &format!("/proxies/{name}"), None).await?;
        if proxy["upstream"] != upstream.to_string() || proxy["enabled"] != true {
            bail!("proxy {name} is not on {upstream} after the update: {proxy}");
        }
        Ok(proxy["listen"].as_str().context("the proxy's listen address")?.parse()?)
    }

    /// Creates a proxy listening on `listen` (a fixed port: one that is disabled and
    /// enabled again listens there again) to `upstream`.
    pub async fn create_proxy_at(&self, name: &str, listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
        let body =
            json!({ "name": name, "listen": listen.to_string(), "upstream": upstream.to_string(), "enabled": true });
        self.call(Method::POST, "/proxies", Some(body)).await.map(drop)
    }

    /// Enables or disables a proxy (disabled: its connections are closed and it refuses
    /// new ones), and reads it back.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> anyhow::Result<()> {
        self.call(Method::POST, &format!("/proxies/{name}"), Some(json!({ "enabled": enabled }))).await?;
        let (_, proxy) = self.call(Method::GET, &format!("/proxies/{name}"), None).await?;
        if proxy["enabled"] != enabled {
            bail!("proxy {name} is not enabled={enabled} after the update: {proxy}");
        }
        Ok(())
    }

    /// Deletes a proxy.
    pub async fn delete_proxy(&self, name: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, &format!("/proxies/{name}"), None).await.map(drop)
    }
}
