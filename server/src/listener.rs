//! The listener seam: the server accepts from anything that yields byte streams and peer
//! addresses. Here for tokio's `TcpListener`; simulations implement it for turmoil's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// TCP keepalive idle time set on accepted sockets (the kernel then probes dead peers).
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Something that accepts connections.
pub trait Listener: Send + 'static {
    /// One accepted connection's byte stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;

    /// The address this listener is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Listener for TcpListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Small event frames must not wait for Nagle; keepalive finds peers that vanished
        // without a FIN even when no write is pending.
        stream.set_nodelay(true)?;
        let keepalive =
            socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE_IDLE).with_interval(Duration::from_secs(10));
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

/// Binds a TCP listener with `SO_REUSEADDR` and the given backlog; with `reuse_port`
/// also `SO_REUSEPORT`, so several processes that all ask for it share the address and
/// the kernel spreads new connections over them.
pub fn bind(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}
