//! The connection's byte stream: bytes already read while sniffing the request are
//! replayed first, and a write that makes no progress for the write timeout fails.
//!
//! The write deadline lives here, under both the lean path and hyper, so a half-open or
//! frozen peer is found the same way whichever path serves it.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A connection's stream with replayed prefix and write deadline.
#[derive(Debug)]
pub struct ConnIo<S> {
    inner: S,
    prefix: Option<Bytes>,
    write_timeout: Duration,
    /// Armed only while a write is pending, so idle streams hold no timer for it.
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl<S> ConnIo<S> {
    /// Wraps `inner`; `prefix` is served to readers before `inner`'s bytes.
    pub fn new(inner: S, prefix: Option<Bytes>, write_timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        ConnIo { inner, prefix: prefix.filter(|p| !p.is_empty()), write_timeout, deadline: None, timed_out }
    }

    /// The stream inside.
    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    fn guard_write<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(deadline.as_mut().poll(cx));
                self.deadline = None;
                self.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write made no progress within the write timeout",
                )))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard_write(cx, polled)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_read_before_the_stream() {
        let (client, mut server) = tokio::io::duplex(64);
        server.write_all(b" world").await.unwrap();
        drop(server);
        let mut io = ConnIo::new(client, Some(Bytes::from_static(b"hello")), Duration::from_secs(1), Arc::default());
        let mut out = String::new();
        io.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    /// A writer that takes everything at once, keeping what was written, how many writes
    /// it took and how many flushes; it says whether it takes vectored writes.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub vectored: bool,
        pub written: Vec<u8>,
        pub writes: usize,
        pub flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            let before = self.written.len();
            bufs.iter().for_each(|buf| self.written.extend_from_slice(buf));
            Poll::Ready(Ok(self.written.len() - before))
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// hyper gathers a response's pieces into one write only for a vectored stream, and
    /// a TLS stream sends its last record on flush: both pass through.
    #[tokio::test]
    async fn vectored_writes_and_flushes_pass_through() {
        for vectored in [true, false] {
            let inner = Recorder { vectored, ..Recorder::default() };
            let mut io = ConnIo::new(inner, None, Duration::from_secs(1), Arc::default());
            assert_eq!(io.is_write_vectored(), vectored);
            io.flush().await.unwrap();
            assert_eq!(io.get_ref().flushes, 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_fails_at_the_timeout() {
        let (client, _server) = tokio::io::duplex(8);
        let flag = Arc::new(AtomicBool::new(false));
        let mut io = ConnIo::new(client, None, Duration::from_secs(3), flag.clone());
        let started = tokio::time::Instant::now();
        let write = io.write_all(b"0123456789abcdef");
        let err = tokio::time::timeout(Duration::from_secs(60), write).await.expect("the deadline fired").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert!(flag.load(Ordering::Relaxed));
    }
}
