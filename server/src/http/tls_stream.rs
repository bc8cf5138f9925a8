//! A server-side TLS stream on rustls's unbuffered API, holding no buffer while idle.
//!
//! rustls's buffered `ServerConnection` (what tokio-rustls wraps) keeps a 4 KiB read
//! buffer and its queues for the life of the connection: most of a TLS event stream's
//! memory when it idles between events. Here the connection's state is rustls's, and the
//! buffers are this stream's: TLS bytes read and not yet processed, TLS bytes not yet
//! sent, and decrypted bytes not yet read by the caller. Each is released the moment it
//! is empty, and a read waits on the socket with a stack buffer, so an idle stream holds
//! only the session itself (its keys and state).
//!
//! - [`accept`]: the handshake (the caller bounds it in time).
//! - [`TlsStream`]: `AsyncRead` + `AsyncWrite` for the HTTP layers above. A write
//!   (at most one record, 16 KiB; a vectored write is gathered into one) encrypts into
//!   the send buffer and returns; the next write waits until the buffer went out, so at
//!   most one record's TLS bytes are held, as do flush and shutdown (which first queues
//!   `close_notify`). So a caller must flush or shut down after its last write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, WriteTraffic};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes read from the socket at once (TLS records are at most ~16 KiB; a larger one
/// takes several reads).
const READ_CHUNK: usize = 4096;
/// Most TLS bytes waiting to be processed: a handshake message rustls joins in place
/// (up to 64 KiB and its header), the next record (at most 18,437 bytes) and one read.
/// More is a peer that sends no whole message.
const MAX_INCOMING: usize = 0xffff + 4 + 18_437 + READ_CHUNK;
/// Most plaintext encrypted by one write: one record. A write then waits for one
/// record's bytes to leave, about what a plain socket's write waits for, so the write
/// timeout above it means the same for TLS.
const MAX_WRITE: usize = 16 * 1024;

/// A TLS stream on `S`, after its handshake.
pub struct TlsStream<S> {
    io: S,
    conn: UnbufferedServerConnection,
    /// TLS bytes read and not processed yet.
    incoming: Vec<u8>,
    /// TLS bytes to send; `sent` of them are sent.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes; `taken` of them were read by the caller.
    plaintext: Vec<u8>,
    taken: usize,
    /// The peer sent `close_notify` or closed the socket.
    read_closed: bool,
    /// This side queued `close_notify`.
    close_queued: bool,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("alpn", &self.alpn_protocol()).finish_non_exhaustive()
    }
}

/// Where processing what was received left the connection.
enum Driven<R> {
    /// Nothing more to process: application data may be sent (the closure's result).
    Writable(R),
    /// The handshake needs more bytes from the peer.
    NeedInput,
    /// Both sides sent `close_notify`.
    Closed,
}

fn tls_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error.to_string())
}

/// The TLS handshake on `io`: the stream once it may carry application data (anything
/// the client sent with its last flight is kept for the first read).
pub async fn accept<S>(config: Arc<ServerConfig>, io: S) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut stream = TlsStream {
        io,
        conn,
        incoming: Vec::new(),
        outgoing: Vec::new(),
        sent: 0,
        plaintext: Vec::new(),
        taken: 0,
        read_closed: false,
        close_queued: false,
    };
    loop {
        let driven = stream.drive(|_, _| Ok(()))?;
        // Whatever the handshake queued goes out before waiting on the peer.
        stream.send_all().await?;
        match driven {
            Driven::Writable(()) => return Ok(stream),
            Driven::Closed => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the handshake")),
            Driven::NeedInput => {
                // Read into `incoming` itself (released when the handshake has used it):
                // a buffer on this future's stack would stay in every connection's task
                // for its whole life, as the largest state of the future.
                if stream.incoming.len() + READ_CHUNK > MAX_INCOMING {
                    return Err(tls_error("the peer sent more than a TLS message can hold"));
                }
                stream.incoming.reserve(READ_CHUNK);
                if stream.io.read_buf(&mut stream.incoming).await? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer left during the handshake"));
                }
            }
        }
    }
}

impl<S> TlsStream<S> {
    /// The protocol ALPN agreed on.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Bytes this stream holds in its own buffers (0 when idle).
    pub fn buffered(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity() + self.plaintext.capacity()
    }

    fn take_in(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.incoming.len() + bytes.len() > MAX_INCOMING {
            return Err(tls_error("the peer sent more than a TLS record can hold"));
        }
        self.incoming.extend_from_slice(bytes);
        Ok(())
    }

    /// Processes what was received: decrypted data goes to `plaintext`, TLS messages
    /// rustls wants sent to `outgoing`. When the connection may send application data,
    /// `on_writable` is called with it and the send buffer.
    fn drive<R>(
        &mut self,
        on_writable: impl FnOnce(&mut WriteTraffic<'_, rustls::server::ServerConnectionData>, &mut Vec<u8>) -> io::Result<R>,
    ) -> io::Result<Driven<R>> {
        let mut on_writable = Some(on_writable);
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let mut discard = status.discard;
            let driven = match status.state {
                Err(error) => Err(tls_error(error)),
                Ok(state) => {
                    let sinks = Sinks {
                        plaintext: &mut self.plaintext,
                        outgoing: &mut self.outgoing,
                        read_closed: &mut self.read_closed,
                    };
                    handle(state, &mut discard, &mut on_writable, sinks)
                }
            };
            // What rustls processed is discarded before anything else, errors included.
            self.incoming.drain(..discard);
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            } else if self.incoming.capacity() > 2 * self.incoming.len() + READ_CHUNK {
                // A partial record kept by a peer gone quiet holds only what it needs.
                self.incoming.shrink_to_fit();
            }
            if let Some(driven) = driven? {
                return Ok(driven);
            }
        }
    }
}

/// Where one state's output goes: the stream's buffers and its read side's end.
struct Sinks<'a> {
    plaintext: &'a mut Vec<u8>,
    outgoing: &'a mut Vec<u8>,
    read_closed: &'a mut bool,
}

/// One state of the connection: `None` to go on processing.
#[allow(clippy::type_complexity)]
fn handle<R>(
    state: ConnectionState<'_, '_, rustls::server::ServerConnectionData>,
    discard: &mut usize,
    on_writable: &mut Option<
        impl FnOnce(&mut WriteTraffic<'_, rustls::server::ServerConnectionData>, &mut Vec<u8>) -> io::Result<R>,
    >,
    sinks: Sinks<'_>,
) -> io::Result<Option<Driven<R>>> {
    let Sinks { plaintext, outgoing, read_closed } = sinks;
    Ok(match state {
        ConnectionState::ReadTraffic(mut records) => {
            while let Some(record) = records.next_record() {
                let record = record.map_err(tls_error)?;
                *discard += record.discard;
                plaintext.extend_from_slice(record.payload);
            }
            None
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            append(outgoing, 256, |buf| {
                encode.encode(buf).map_err(|error| match error {
                    EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                        Short::Needs(required_size)
                    }
                    error => Short::Failed(tls_error(error)),
                })
            })?;
            None
        }
        // Queued in `outgoing`, in order; sent before anything written later.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            None
        }
        ConnectionState::PeerClosed => {
            *read_closed = true;
            None
        }
        ConnectionState::Closed => Some(Driven::Closed),
        ConnectionState::BlockedHandshake => Some(Driven::NeedInput),
        ConnectionState::WriteTraffic(mut writable) => {
            let on_writable = on_writable.take().expect("called once: it ends the loop");
            Some(Driven::Writable(on_writable(&mut writable, outgoing)?))
        }
        // Early data is never accepted (`max_early_data_size` is 0).
        other => return Err(tls_error(format!("unexpected TLS state {other:?}"))),
    })
}

impl<S: AsyncWrite + Unpin> TlsStream<S> {
    /// Sends what `outgoing` holds; released once it is all sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    async fn send_all(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send(cx)).await?;
        self.io.flush().await
    }
}

/// Encrypts `data` onto the end of `outgoing`.
fn encrypt(
    writable: &mut WriteTraffic<'_, rustls::server::ServerConnectionData>,
    outgoing: &mut Vec<u8>,
    data: &[u8],
) -> io::Result<()> {
    // Each record adds a header, a tag and a content type: 64 bytes covers it for small
    // writes; a larger write is told its exact size.
    append(outgoing, data.len() + 64, |buf| writable.encrypt(data, buf).map_err(Short::from))
}

/// Why a rustls call wrote nothing into the room it was given.
enum Short {
    /// It needs this many bytes.
    Needs(usize),
    Failed(io::Error),
}

impl From<EncryptError> for Short {
    fn from(error: EncryptError) -> Short {
        match error {
            EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => Short::Needs(required_size),
            error => Short::Failed(tls_error(error)),
        }
    }
}

/// Appends to `outgoing` what `write` puts into `size` bytes of room, given more room
/// when it says it needs more.
fn append(
    outgoing: &mut Vec<u8>,
    mut size: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Short>,
) -> io::Result<()> {
    loop {
        let start = outgoing.len();
        outgoing.resize(start + size, 0);
        let written = write(&mut outgoing[start..]);
        outgoing.truncate(start + *written.as_ref().unwrap_or(&0));
        match written {
            Ok(_) => return Ok(()),
            Err(Short::Needs(needed)) if needed > size => size = needed,
            Err(Short::Needs(needed)) => {
                return Err(tls_error(format!("rustls asked for {needed} bytes, given {size}")))
            }
            Err(Short::Failed(error)) => return Err(error),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plaintext.len() {
                let n = (this.plaintext.len() - this.taken).min(buf.remaining());
                buf.put_slice(&this.plaintext[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.drive(|_, _| Ok(()))? {
                Driven::Closed => this.read_closed = true,
                Driven::Writable(()) | Driven::NeedInput => {}
            }
            if this.taken < this.plaintext.len() || this.read_closed {
                continue;
            }
            // TLS messages queued meanwhile (a TLS 1.2 refusal to renegotiate) go out on
            // the way; a peer that does not read them does not stop this read.
            if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                return Poll::Ready(Err(error));
            }
            // A stack buffer: an idle stream waiting here holds none of its own.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // Closed without `close_notify`: an end of stream all the same to HTTP,
                // which frames its own messages.
                this.read_closed = true;
                continue;
            }
            this.take_in(read.filled())?;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // The previous write's bytes go out first: at most one write is ever held.
        ready!(this.poll_send(cx))?;
        if this.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let data = &buf[..buf.len().min(MAX_WRITE)];
        match this.drive(|writable, outgoing| encrypt(writable, outgoing, data))? {
            Driven::Writable(()) => {}
            Driven::NeedInput => return Poll::Ready(Err(tls_error("a write before the handshake ended"))),
            Driven::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
        // Sent now if the socket takes it, else by the next write, flush or shutdown.
        if let Poll::Ready(Err(error)) = this.poll_send(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(data.len()))
    }

    /// The slices gathered into one record (at most `MAX_WRITE` bytes of them), not a
    /// record each.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut gathered = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE));
        for buf in bufs {
            let room = MAX_WRITE - gathered.len();
            gathered.extend_from_slice(&buf[..buf.len().min(room)]);
            if gathered.len() == MAX_WRITE {
                break;
            }
        }
        self.poll_write(cx, &gathered)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if !this.close_queued {
            this.close_queued = true;
            let queued = this.drive(|writable, outgoing| {
                append(outgoing, 64, |buf| writable.queue_close_notify(buf).map_err(Short::from))
            });
            // A connection that cannot say goodbye (already closed, broken) just closes.
            if queued.is_ok() {
                ready!(this.poll_send(cx))?;
            }
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::path::PathBuf;

    use futures_util::FutureExt;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{duplex, DuplexStream};
    use tokio_rustls::client::TlsStream as ClientStream;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls").join(name)
    }

    fn server_config() -> Arc<ServerConfig> {
        crate::http::tls::load(&fixture("server.pem"), &fixture("server.key")).unwrap().config()
    }

    /// A client trusting the test CA, offering `alpn`, and the server's end, over a pipe
    /// of `capacity` bytes each way.
    async fn pair(alpn: &[u8], capacity: usize) -> (ClientStream<DuplexStream>, TlsStream<DuplexStream>) {
        pair_with(rustls::crypto::ring::default_provider(), alpn, capacity).await
    }

    /// The same, the client using `provider` (rustls's stock ring one, or fewer suites).
    async fn pair_with(
        provider: rustls::crypto::CryptoProvider,
        alpn: &[u8],
        capacity: usize,
    ) -> (ClientStream<DuplexStream>, TlsStream<DuplexStream>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(fixture("ca.pem")).unwrap()).unwrap();
        let provider = Arc::new(provider);
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![alpn.to_vec()];
        let (near, far) = duplex(capacity);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let (client, server) = tokio::join!(
            connector.connect(ServerName::try_from("localhost").unwrap(), near),
            accept(server_config(), far)
        );
        (client.unwrap(), server.unwrap())
    }

    #[tokio::test]
    async fn a_request_and_events_cross_and_an_idle_stream_holds_no_buffer() {
        let (mut client, mut server) = pair(b"http/1.1", 64 * 1024).await;
        assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
        client.write_all(b"GET /events HTTP/1.1\r\n\r\n").await.unwrap();
        let mut head = [0u8; 24];
        server.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"GET /events HTTP/1.1\r\n\r\n");
        for i in 0..3 {
            let event = format!("id: {i}\ndata: {}\n\n", "x".repeat(100));
            server.write_all(event.as_bytes()).await.unwrap();
            server.flush().await.unwrap();
            let mut got = vec![0u8; event.len()];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, event.as_bytes());
        }
        // A vectored write (the lean path's head, size line, frames) is one record.
        let parts = [io::IoSlice::new(b"id: 9\n"), io::IoSlice::new(b"data: y\n"), io::IoSlice::new(b"\n")];
        assert!(server.is_write_vectored());
        assert_eq!(server.write_vectored(&parts).await.unwrap(), 15, "every slice taken at once");
        server.flush().await.unwrap();
        let mut got = [0u8; 15];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"id: 9\ndata: y\n\n");
        // Waiting for the client to say something (as a stream does, to see it leave).
        let mut byte = [0u8; 1];
        assert!(server.read(&mut byte).now_or_never().is_none(), "nothing to read");
        assert_eq!(server.buffered(), 0, "an idle stream holds no buffer of its own");
    }

    /// What a record brings is read out at once, without waiting for the next one: the
    /// server, in a task of its own (as each connection is), answers each request as it
    /// comes, though the client sends nothing more until it has the answer.
    #[tokio::test]
    async fn a_record_is_read_out_without_waiting_for_the_next() {
        let (mut client, mut server) = pair(b"http/1.1", 64 * 1024).await;
        const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        const ANSWER: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
        let answering = tokio::spawn(async move {
            let mut request = [0u8; REQUEST.len()];
            while server.read_exact(&mut request).await.is_ok() {
                server.write_all(ANSWER).await.unwrap();
                server.flush().await.unwrap();
            }
        });
        for _ in 0..3 {
            client.write_all(REQUEST).await.unwrap();
            client.flush().await.unwrap();
            let mut answer = [0u8; ANSWER.len()];
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), client.read_exact(&mut answer)).await;
            assert!(read.is_ok(), "no answer: the request's record was read but its bytes not handed out");
            assert_eq!(answer, ANSWER);
        }
        answering.abort();
    }

    /// Each TLS 1.3 suite, the client on rustls's stock ring keys and the server on its
    /// compact ones: records cross both ways, several of them (the sequence advances).
    #[tokio::test]
    async fn every_tls13_suite_speaks_with_a_stock_client() {
        use rustls::crypto::ring::cipher_suite::{
            TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
        };
        for suite in [TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256] {
            let provider = rustls::crypto::CryptoProvider {
                cipher_suites: vec![suite],
                ..rustls::crypto::ring::default_provider()
            };
            let (mut client, mut server) = pair_with(provider, b"http/1.1", 64 * 1024).await;
            assert_eq!(client.get_ref().1.negotiated_cipher_suite(), Some(suite));
            let Some(rustls::SupportedCipherSuite::Tls13(ours)) = server.conn.negotiated_cipher_suite() else {
                panic!("no TLS 1.3 suite on the server")
            };
            assert!(
                crate::http::tls_keys::suites().iter().any(|compact| std::ptr::eq(compact, ours)),
                "the server protects records with its compact keys"
            );
            assert_eq!(client.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
            for i in 0..3 {
                let up = format!("request {i}");
                client.write_all(up.as_bytes()).await.unwrap();
                client.flush().await.unwrap();
                let mut got = vec![0u8; up.len()];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(got, up.as_bytes(), "{suite:?}");
                let down = format!("id: {i}\ndata: {}\n\n", "z".repeat(i * 40));
                server.write_all(down.as_bytes()).await.unwrap();
                server.flush().await.unwrap();
                let mut got = vec![0u8; down.len()];
                client.read_exact(&mut got).await.unwrap();
                assert_eq!(got, down.as_bytes(), "{suite:?}");
            }
        }
    }

    #[tokio::test]
    async fn alpn_chooses_h2_when_the_client_offers_it() {
        let (_client, server) = pair(b"h2", 64 * 1024).await;
        assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
    }

    /// Through a 1 KiB pipe: records split across reads and writes, writes larger than
    /// a record, both ways at once.
    #[tokio::test]
    async fn large_writes_and_reads_arrive_whole_through_a_narrow_pipe() {
        let (client, server) = pair(b"http/1.1", 1024).await;
        let down: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let up: Vec<u8> = (0..90_000u32).map(|i| (i % 241) as u8).collect();
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let (sent_down, sent_up) = (down.clone(), up.clone());
        let (got_down, got_up, (), ()) = tokio::join!(
            async {
                let mut got = vec![0u8; sent_down.len()];
                client_read.read_exact(&mut got).await.unwrap();
                got
            },
            async {
                // In pieces smaller than a record: a record is handed out across reads.
                let mut got = Vec::new();
                let mut piece = [0u8; 1000];
                while got.len() < sent_up.len() {
                    let n = server_read.read(&mut piece).await.unwrap();
                    assert!(n > 0, "the stream ended early");
                    got.extend_from_slice(&piece[..n]);
                }
                got
            },
            async {
                server_write.write_all(&down).await.unwrap();
                server_write.flush().await.unwrap();
            },
            async {
                client_write.write_all(&up).await.unwrap();
                client_write.flush().await.unwrap();
            },
        );
        assert!(got_down == sent_down, "the server's bytes arrive whole and in order");
        assert!(got_up == sent_up, "the client's bytes arrive whole and in order");
    }

    /// A ClientHello that arrives in pieces (a slow link's segments) is waited for: the
    /// bound on waiting bytes is on their sum, not on each read.
    #[tokio::test]
    async fn a_client_hello_in_pieces_is_waited_for() {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(fixture("ca.pem")).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        let (mut near, far) = duplex(64 * 1024);
        let server = tokio::spawn(accept(server_config(), far));
        for piece in hello.chunks(40) {
            near.write_all(piece).await.unwrap();
            // This runtime has one thread: the server reads the piece before the next.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        let mut answer = [0u8; 5];
        near.read_exact(&mut answer).await.expect("the server answers the whole hello");
        assert_eq!(answer[0], 0x16, "a handshake record (the ServerHello): {answer:?}");
        server.abort();
    }

    /// A write encrypts at most one full record's plaintext, gathered from its slices.
    #[tokio::test]
    async fn a_write_takes_one_full_record() {
        let (_client, mut server) = pair(b"http/1.1", 256 * 1024).await;
        assert_eq!(server.write(&[7u8; 65_536]).await.unwrap(), 16 * 1024);
        let piece = [8u8; 10_000];
        let slices = [IoSlice::new(&piece), IoSlice::new(&piece), IoSlice::new(&piece)];
        assert_eq!(server.write_vectored(&slices).await.unwrap(), 16 * 1024);
        assert_eq!(server.write(&piece[..100]).await.unwrap(), 100);
    }

    #[tokio::test]
    async fn a_shutdown_says_close_notify_and_the_peers_is_an_end_of_stream() {
        let (mut client, mut server) = pair(b"http/1.1", 64 * 1024).await;
        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        // tokio-rustls reports a close without `close_notify` as an error: this is clean.
        client.read_to_end(&mut got).await.expect("a clean TLS close");
        assert_eq!(got, b"bye");
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert!(server.write_all(b"more").await.is_err(), "nothing is written after the goodbye");
    }

    /// Records arrive in reads of `READ_CHUNK` bytes, so the buffer grows to assemble a
    /// full one (16 KiB); what is left once it is decrypted, part of the next record from
    /// a peer that may now go quiet, keeps only its own bytes.
    #[tokio::test]
    async fn a_partial_record_left_waiting_holds_only_its_own_bytes() {
        let (mut client, mut server) = pair(b"http/1.1", 64 * 1024).await;
        client.write_all(&[5u8; 30_000]).await.unwrap();
        client.flush().await.unwrap();
        let mut first = vec![0u8; 16 * 1024];
        server.read_exact(&mut first).await.unwrap();
        let held = server.buffered();
        assert!(held > 0 && held < 2 * READ_CHUNK, "held {held} bytes past the first record");
        let mut rest = vec![0u8; 30_000 - first.len()];
        server.read_exact(&mut rest).await.unwrap();
        assert!(first.iter().chain(&rest).all(|&b| b == 5), "every byte arrived as sent");
    }

    /// `append` gives rustls the room it asks for, keeps only what it wrote, and takes a
    /// request for no more room than it had as the error it is (not a loop).
    #[test]
    fn append_grows_to_the_room_asked_for_and_no_further() {
        let mut out = b"ab".to_vec();
        let mut offered = Vec::new();
        append(&mut out, 4, |buf| {
            offered.push(buf.len());
            if buf.len() < 10 {
                return Err(Short::Needs(10));
            }
            buf[..3].copy_from_slice(b"xyz");
            Ok(3)
        })
        .unwrap();
        assert_eq!((out.as_slice(), offered.as_slice()), (&b"abxyz"[..], &[4, 10][..]));
        let mut calls = 0;
        let error = append(&mut out, 8, |_| {
            calls += 1;
            assert!(calls == 1, "asked again for the room it was given");
            Err(Short::Needs(8))
        })
        .unwrap_err();
        assert!(error.to_string().contains("rustls asked for 8 bytes, given 8"), "{error}");
        assert_eq!(out, b"abxyz", "nothing of a failed call is kept");
    }

    /// A peer that stops reading stops the writer: a write waits once the socket is full,
    /// with one write's bytes held at most.
    #[tokio::test]
    async fn a_write_waits_for_a_peer_that_does_not_read() {
        let (_client, mut server) = pair(b"http/1.1", 4096).await;
        let chunk = [7u8; 1000];
        let mut writes = 0;
        while server.write_all(&chunk).now_or_never().is_some() {
            writes += 1;
            assert!(writes < 100, "writes never waited for a peer that does not read");
        }
        assert!(writes >= 3, "the pipe took a few writes first: {writes}");
        assert!(server.buffered() <= 2 * chunk.len(), "held {} bytes", server.buffered());
        assert!(server.buffered() >= chunk.len(), "the record it could not send is held: {} bytes", server.buffered());
    }

    /// The handshake's future is part of every TLS connection's task for its whole life
    /// (its largest state sizes the task): it must hold no read buffer of its own.
    #[test]
    fn the_handshake_holds_no_buffer_in_the_connections_task() {
        let (_near, far) = duplex(1);
        let handshake = accept(server_config(), far);
        let stream = std::mem::size_of::<TlsStream<DuplexStream>>();
        assert!(std::mem::size_of_val(&handshake) < stream + 256, "{} B", std::mem::size_of_val(&handshake));
    }

    #[tokio::test]
    async fn plain_http_is_a_handshake_error() {
        let (mut near, far) = duplex(4096);
        near.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        assert!(accept(server_config(), far).await.is_err());
    }
}
