//! The lean event-stream path for HTTP/1.1: after the head is parsed, the task owns the
//! socket and writes chunked frames itself. No hyper buffers stay alive for the stream's
//! lifetime; its state is the socket, the subscription cursor and this task.

use std::io::IoSlice;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::conn::ConnGuard;
use crate::error::ApiError;
use crate::frame;
use crate::io::{write_all_slices, ConnIo};
use crate::metrics::DisconnectReason;
use crate::request::SubscribeRequest;
use crate::server::Shared;
use crate::subscription::{Next, Subscription};

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
content-type: text/event-stream\r\n\
cache-control: no-cache\r\n\
x-accel-buffering: no\r\n\
connection: close\r\n\
transfer-encoding: chunked\r\n\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Opens the subscription `request` asks for and streams it; answers an error instead
/// when it cannot be opened. Runs as its own task, holding the connection's guard.
pub(crate) async fn serve_stream<S>(
    shared: Arc<Shared>,
    io: ConnIo<S>,
    request: Result<SubscribeRequest, ApiError>,
    timed_out: Arc<AtomicBool>,
    _guard: ConnGuard,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match request.and_then(|r| shared.subscribe(&r.topics, r.last_event_id.as_deref(), timed_out)) {
        Ok(subscription) => stream_events(&shared, io, subscription).await,
        // Boxed: an error answer's state need not be part of every stream's task.
        Err(error) => Box::pin(refuse(&shared, io, error)).await,
    }
}

async fn refuse<S: AsyncWrite + Unpin>(shared: &Shared, mut io: ConnIo<S>, error: ApiError) {
    shared.metrics.rejected(error.code());
    let _ = io.write_all(&error.raw_http1()).await;
}

/// Streams until the client leaves, a write stalls, the cursor falls out of the window,
/// or the server drains.
async fn stream_events<S>(shared: &Shared, mut io: ConnIo<S>, mut subscription: Subscription)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Some(RESPONSE_HEAD);
    // Anything the client sends after its request (or its FIN) ends the stream at once,
    // instead of at the next failed write.
    let mut probe = [0u8; 1];
    loop {
        let next = tokio::select! {
            biased;
            next = subscription.next() => next,
            _ = io.read(&mut probe) => break,
        };
        let head = head.take().unwrap_or_default();
        let written = match next {
            Next::Opening(opening) => write_chunk(&mut io, head, &[&opening], b"").await,
            Next::Events(frames) => {
                let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                let written = write_chunk(&mut io, head, &parts, b"").await;
                if written.is_ok() {
                    subscription.delivered(frames.len());
                }
                written
            }
            Next::Heartbeat => write_chunk(&mut io, head, &[frame::HEARTBEAT], b"").await,
            Next::Shutdown => {
                subscription.end(DisconnectReason::Shutdown);
                let goodbye = shared.goodbye();
                let _ = write_chunk(&mut io, head, &[&goodbye], LAST_CHUNK).await;
                break;
            }
            Next::SlowConsumer => {
                subscription.end(DisconnectReason::SlowConsumer);
                let _ = write_chunk(&mut io, head, &[frame::SLOW_CONSUMER], LAST_CHUNK).await;
                break;
            }
        };
        if written.is_err() {
            break;
        }
    }
    drop(subscription);
    let _ = io.shutdown().await;
}

/// One chunk of the chunked body holding `parts`, in a single vectored write.
async fn write_chunk<S: AsyncWrite + Unpin>(
    io: &mut ConnIo<S>,
    head: &[u8],
    parts: &[&[u8]],
    trailer: &[u8],
) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut size_line = [0u8; 20];
    let size_line = chunk_size_line(len, &mut size_line);
    let mut slices = Vec::with_capacity(parts.len() + 4);
    slices.push(IoSlice::new(head));
    slices.push(IoSlice::new(size_line));
    slices.extend(parts.iter().map(|p| IoSlice::new(p)));
    slices.push(IoSlice::new(b"\r\n"));
    slices.push(IoSlice::new(trailer));
    write_all_slices(io, &mut slices).await
}

/// `{len:x}\r\n` without allocating.
fn chunk_size_line(len: usize, buf: &mut [u8; 20]) -> &[u8] {
    let digits = if len == 0 { 1 } else { (usize::BITS - len.leading_zeros()).div_ceil(4) as usize };
    for (i, slot) in buf[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *slot = b"0123456789abcdef"[nibble];
    }
    buf[digits..digits + 2].copy_from_slice(b"\r\n");
    &buf[..digits + 2]
}

#[cfg(test)]
mod tests {
    use super::chunk_size_line;

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for len in [0usize, 1, 15, 16, 255, 4096, 0x1234_5678, usize::MAX] {
            let mut buf = [0u8; 20];
            assert_eq!(chunk_size_line(len, &mut buf), format!("{len:x}\r\n").as_bytes());
        }
    }
}
