//! The lean event-stream path for HTTP/1.1: after the head is parsed, the task owns the
//! socket and writes chunked frames itself. No hyper buffers stay alive for the stream's
//! lifetime; its state is the socket, the subscription cursor and this task.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ApiError;
use crate::frame;
use crate::io::{write_all_vectored, ConnIo};
use crate::metrics::DisconnectReason;
use crate::request::SubscribeRequest;
use crate::server::Shared;
use crate::subscription::Next;

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
content-type: text/event-stream\r\n\
cache-control: no-cache\r\n\
x-accel-buffering: no\r\n\
connection: close\r\n\
transfer-encoding: chunked\r\n\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Streams events for `request` until the client leaves, a write stalls, the cursor
/// falls out of the window, or the server drains.
pub(crate) async fn serve_stream<S>(
    shared: &Shared,
    mut io: ConnIo<S>,
    request: Result<SubscribeRequest, ApiError>,
    timed_out: Arc<AtomicBool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let opened = request.and_then(|r| shared.subscribe(&r.topics, r.last_event_id.as_deref(), timed_out));
    let mut subscription = match opened {
        Ok(subscription) => subscription,
        Err(error) => {
            shared.metrics.rejected(error.code());
            let _ = io.write_all(&error.raw_http1()).await;
            return;
        }
    };
    let mut head = Some(RESPONSE_HEAD);
    // Anything the client sends after its request (or its FIN) ends the stream at once,
    // instead of at the next failed write.
    let mut probe = [0u8; 1];
    loop {
        let next = tokio::select! {
            biased;
            next = subscription.next(&shared.shutdown) => next,
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
    let size_line = format!("{len:x}\r\n");
    let mut all = Vec::with_capacity(parts.len() + 4);
    all.push(head);
    all.push(size_line.as_bytes());
    all.extend_from_slice(parts);
    all.push(b"\r\n");
    all.push(trailer);
    write_all_vectored(io, &all).await
}
