//! The server's `Listener` seam implemented on turmoil's simulated TCP.

use std::io;
use std::net::SocketAddr;

use sse_server::Listener;

/// turmoil's listener as the server sees it.
pub struct SimListener(pub turmoil::net::TcpListener);

impl Listener for SimListener {
    type Io = turmoil::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
