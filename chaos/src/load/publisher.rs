//! A keep-alive HTTP/1.1 publisher on hyper's client.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One kept-alive connection for publishing.
pub struct Publisher {
    sender: SendRequest<Full<Bytes>>,
    path: String,
    /// `Authorization` header value, if publishing needs a token.
    authorization: Option<String>,
}

impl Publisher {
    pub async fn connect(addr: SocketAddr, topic: &str) -> anyhow::Result<Publisher> {
        let tcp = TcpStream::connect(addr).await.context("connect")?;
        tcp.set_nodelay(true)?;
        Publisher::connect_over(tcp, topic).await
    }

    /// The same over any byte stream already connected to the server (TLS).
    pub async fn connect_over<S>(io: S, topic: &str) -> anyhow::Result<Publisher>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(connection);
        Ok(Publisher { sender, path: format!("/events?topic={topic}"), authorization: None })
    }

    /// Sends `Authorization: Bearer <token>` with every publish.
    pub fn with_bearer(mut self, token: &str) -> Publisher {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    /// Publishes one event; fails unless the server answers 201.
    pub async fn publish(&mut self, body: Bytes) -> anyhow::Result<()> {
        self.publish_for_id(body).await.map(drop)
    }

    /// Publishes one event and returns its id; fails unless the server answers 201.
    pub async fn publish_for_id(&mut self, body: Bytes) -> anyhow::Result<String> {
        self.sender.ready().await?;
        let mut request = http::Request::post(&self.path).header("host", "bench");
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization);
        }
        let request = request.body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let answer = response.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::CREATED {
            bail!("publish answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        let answer = String::from_utf8_lossy(&answer);
        let id = answer.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next()).context("no id")?;
        Ok(id.to_owned())
    }
}

/// Reads one unlabelled metric from `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    metric_line(addr, name).await
}

/// Reads one labelled sample, e.g. `sse_disconnects_total{reason="write_timeout"}`; zero
/// when the series has not appeared yet.
pub async fn metric_labelled(addr: SocketAddr, series: &str) -> anyhow::Result<f64> {
    Ok(metric_line(addr, series).await.unwrap_or(0.0))
}

async fn metric_line(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    metric_over(TcpStream::connect(addr).await.context("connect")?, name).await
}

/// The whole `/metrics` text of the server at `addr`.
pub async fn exposition(addr: SocketAddr) -> anyhow::Result<String> {
    exposition_over(TcpStream::connect(addr).await.context("connect")?).await
}

/// The whole `/metrics` text over any byte stream connected to the server.
async fn exposition_over<S>(io: S) -> anyhow::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(connection);
    let request = http::Request::get("/metrics").header("host", "bench").body(Full::new(Bytes::new()))?;
    let text = sender.send_request(request).await?.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Reads one unlabelled metric over any byte stream connected to the server (TLS).
pub async fn metric_over<S>(io: S, name: &str) -> anyhow::Result<f64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let text = exposition_over(io).await?;
    let prefix = format!("{name} ");
    let line = text.lines().find(|l| l.starts_with(&prefix)).with_context(|| format!("no metric {name}"))?;
    Ok(line[prefix.len()..].trim().parse()?)
}
