//! The lean event-stream path for HTTP/1.1. After the request head is parsed, the stream
//! is a plain struct polled as its own task: the socket, the subscription cursor, the
//! chunk being written and the connection guard. No HTTP library buffers, no nested
//! futures: the task holds exactly this state.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::io::ConnIo;
use crate::http::shared::{ConnGuard, Shared};
use crate::metrics::DisconnectReason;
use crate::stream::frame;
use crate::stream::subscription::{Next, Subscription};

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
content-type: text/event-stream\r\n\
cache-control: no-cache\r\n\
x-accel-buffering: no\r\n\
connection: close\r\n\
transfer-encoding: chunked\r\n\r\n";
/// The response head but its final CRLF, for heads with more lines (CORS).
const RESPONSE_HEAD_OPEN: &[u8] = RESPONSE_HEAD.split_at(RESPONSE_HEAD.len() - 2).0;
const CRLF: &[u8] = b"\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// Slices of a chunk of up to four frames: the head, the size line, the frames, the CRLF
/// and the last chunk.
const FEW_SLICES: usize = 8;

/// One HTTP/1.1 event stream; completes when the stream has ended.
pub(crate) struct LeanStream<S> {
    shared: Arc<Shared>,
    io: ConnIo<S>,
    subscription: Subscription,
    out: Chunk,
    /// The response head (waiting in `out.head`) still has to go out, in front of the
    /// first chunk.
    head_pending: bool,
    _guard: ConnGuard,
}

/// The chunk being written: `[head] size-line frames… CRLF [last-chunk]`. Kept small:
/// every idle stream holds one (the small fields share a word).
#[derive(Default)]
struct Chunk {
    head: Bytes,
    frames: Vec<Bytes>,
    /// Bytes of this chunk already written (a chunk is at most a batch: far below 4 GiB).
    written: u32,
    size_line: [u8; 20],
    size_len: u8,
    /// Events among `frames` (comments and goodbyes are not events); at most a batch.
    events: u16,
    /// The terminating zero-length chunk follows.
    last_chunk: bool,
    active: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LeanStream<S> {
    /// A stream whose response head carries `extra_head_lines` (whole `name: value\r\n`
    /// lines) besides the fixed ones.
    pub(crate) fn new(
        shared: Arc<Shared>,
        io: ConnIo<S>,
        subscription: Subscription,
        guard: ConnGuard,
        extra_head_lines: &str,
    ) -> Self {
        let head = match extra_head_lines {
            "" => Bytes::from_static(RESPONSE_HEAD),
            extra => Bytes::from([RESPONSE_HEAD_OPEN, extra.as_bytes(), CRLF].concat()),
        };
        let out = Chunk { head, ..Chunk::default() };
        LeanStream { shared, io, subscription, out, head_pending: true, _guard: guard }
    }

    fn queue(&mut self, next: Next) {
        let head =
            if std::mem::take(&mut self.head_pending) { std::mem::take(&mut self.out.head) } else { Bytes::new() };
        let (frames, events, last) = match next {
            Next::Opening(opening) => (vec![opening], 0, false),
            Next::Events(frames) => {
                let events = frames.len();
                (frames, events, false)
            }
            Next::Heartbeat => (vec![Bytes::from_static(frame::HEARTBEAT)], 0, false),
            Next::Shutdown => {
                self.subscription.end(DisconnectReason::Shutdown);
                (vec![self.shared.goodbye()], 0, true)
            }
            Next::Disconnect(reason, farewell) => {
                self.subscription.end(reason);
                (vec![Bytes::from_static(farewell)], 0, true)
            }
        };
        self.out.set(head, frames, events, last);
    }

    /// The client closed, reset, or sent bytes after its request: the stream is over.
    fn peer_gone(&mut self, cx: &mut Context<'_>) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        Pin::new(&mut self.io).poll_read(cx, &mut buf).is_ready()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for LeanStream<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.out.last_chunk && !this.out.active {
                // The goodbye or farewell was written: it must reach the client before the
                // stream ends (a TLS stream holds its last write until flushed), and then
                // the client is told the stream is over. Failing at that is the end too.
                let _ = ready!(Pin::new(&mut this.io).poll_flush(cx));
                let _ = ready!(Pin::new(&mut this.io).poll_shutdown(cx));
                return Poll::Ready(());
            }
            if this.out.active {
                match this.out.poll_write(&mut this.io, cx) {
                    Poll::Pending => return Poll::Pending,
                    // A failed or timed-out write ends the stream (the reason is recorded
                    // by the subscription and the write deadline).
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(events)) => {
                        this.subscription.delivered(events);
                        // The last chunk (goodbye or farewell) ends the stream, above.
                        if this.out.last_chunk {
                            continue;
                        }
                    }
                }
            }
            if this.peer_gone(cx) {
                return Poll::Ready(());
            }
            match this.subscription.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => this.queue(next),
            }
        }
    }
}

impl Chunk {
    fn set(&mut self, head: Bytes, frames: Vec<Bytes>, events: usize, last_chunk: bool) {
        let len = frames.iter().map(Bytes::len).sum();
        self.size_len = chunk_size_line(len, &mut self.size_line).len() as u8;
        self.head = head;
        self.frames = frames;
        self.events = u16::try_from(events).expect("a batch is at most MAX_BATCH_EVENTS");
        self.last_chunk = last_chunk;
        self.written = 0;
        self.active = true;
    }

    fn parts(&self) -> impl Iterator<Item = &[u8]> {
        let trailer = if self.last_chunk { LAST_CHUNK } else { b"" };
        [&self.head[..], &self.size_line[..usize::from(self.size_len)]]
            .into_iter()
            .chain(self.frames.iter().map(|f| &f[..]))
            .chain([CRLF, trailer])
    }

    /// Writes the rest of the chunk; `Ready(Ok(events))` once all of it is out.
    fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut ConnIo<S>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        loop {
            // Most chunks are one event or a heartbeat: their slices fit on the stack, and a
            // batch's go to the heap, rather than clearing 4 KiB of stack for every write.
            let parts = self.frames.len() + 4;
            let mut few = [IoSlice::new(&[]); FEW_SLICES];
            let mut many;
            let slices: &mut [IoSlice] = if parts <= FEW_SLICES {
                &mut few
            } else {
                many = vec![IoSlice::new(&[]); parts];
                &mut many
            };
            let mut count = 0;
            let mut skip = self.written as usize;
            for part in self.parts() {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices[count] = IoSlice::new(&part[skip..]);
                skip = 0;
                count += 1;
                if count == slices.len() {
                    break;
                }
            }
            if count == 0 {
                // Release the frames (and the vector) now: an idle stream holds no buffer.
                self.frames = Vec::new();
                self.active = false;
                return Poll::Ready(Ok(usize::from(self.events)));
            }
            match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += u32::try_from(n).expect("one write is below 4 GiB"),
            }
        }
    }
}

/// `{len:x}\r\n` without allocating.
fn chunk_size_line(len: usize, buf: &mut [u8; 20]) -> &[u8] {
    let digits = if len == 0 { 1 } else { (usize::BITS - len.leading_zeros()).div_ceil(4) as usize };
    for (i, slot) in buf[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *slot = b"0123456789abcdef"[nibble];
    }
    buf[digits..digits + 2].copy_from_slice(CRLF);
    &buf[..digits + 2]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::{chunk_size_line, Chunk};
    use crate::http::io::{tests::Recorder, ConnIo};
    use crate::stream::hub::MAX_BATCH_EVENTS;

    /// A chunk goes out in one write, whatever its frame count (a batch is one system
    /// call), to a stream that takes everything at once.
    #[tokio::test]
    async fn a_chunk_is_one_write_whatever_its_frames() {
        for frames in [1, 4, 5, 64, MAX_BATCH_EVENTS] {
            let recorder = Recorder { vectored: true, ..Recorder::default() };
            let mut io = ConnIo::new(recorder, None, Duration::from_secs(1), Arc::default());
            let batch: Vec<Bytes> = (0..frames).map(|i| Bytes::from(format!("data: {i}\n\n"))).collect();
            let body = batch.concat();
            let mut chunk = Chunk::default();
            chunk.set(Bytes::from_static(b"HEAD\r\n"), batch, frames, true);
            let events = std::future::poll_fn(|cx| chunk.poll_write(&mut io, cx)).await.unwrap();
            assert_eq!(events, frames);
            let mut size = [0u8; 20];
            let size = chunk_size_line(body.len(), &mut size);
            let expected = [&b"HEAD\r\n"[..], size, &body, b"\r\n", b"0\r\n\r\n"].concat();
            assert_eq!(String::from_utf8_lossy(&io.get_ref().written), String::from_utf8_lossy(&expected));
            assert_eq!(io.get_ref().writes, 1, "{frames} frames");
        }
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for len in [0usize, 1, 15, 16, 255, 4096, 0x1234_5678, usize::MAX] {
            let mut buf = [0u8; 20];
            assert_eq!(chunk_size_line(len, &mut buf), format!("{len:x}\r\n").as_bytes());
        }
    }
}
