//! A raw HTTP/1.1 event-stream client: sends the request, checks the status, then
//! hands back the socket. Events are found by scanning lines for `data: ` (chunk-size
//! lines never start with it), which is all the benchmarks need.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `GET /events?topic=…` and waits for the status line and the opening `retry:`.
pub async fn open(addr: SocketAddr, topic: &str) -> anyhow::Result<TcpStream> {
    open_over(TcpStream::connect(addr).await.context("connect")?, addr, topic).await
}

/// The same over any byte stream already connected to `addr` (TLS).
pub async fn open_over<S: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: S,
    addr: SocketAddr,
    topic: &str,
) -> anyhow::Result<S> {
    let request = format!("GET /events?topic={topic} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !contains(&head, b"retry: ") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before the stream opened: {}", String::from_utf8_lossy(&head));
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!("not a stream: {}", String::from_utf8_lossy(&head));
    }
    Ok(tcp)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Splits a byte stream into lines and hands each `data: ` payload to a callback.
#[derive(Debug, Default)]
pub struct DataLines {
    partial: Vec<u8>,
}

impl DataLines {
    /// Feeds bytes read from the socket.
    pub fn feed(&mut self, bytes: &[u8], mut on_data: impl FnMut(&[u8])) {
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[start..start + end];
            if let Some(data) = line.strip_prefix(b"data: ") {
                on_data(data);
            }
            start += end + 1;
        }
        self.partial.drain(..start);
    }
}
