//! The listening socket both servers bind: `SO_REUSEADDR` and a deep accept queue.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// The accept queue a listener asks for (the kernel caps it at
/// `net.core.somaxconn`). `TcpListener::bind` asks for 128: a reconnect
/// storm of thousands of clients (a gateway died) then overflows it, and
/// every dropped SYN costs its client a 1 s retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with a [`LISTEN_BACKLOG`] accept queue. Must be called inside a tokio runtime.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_and_accepts() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let (connected, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        assert_eq!(
            connected.unwrap().local_addr().unwrap(),
            accepted.unwrap().1
        );
    }

    #[tokio::test]
    async fn a_taken_address_is_an_error() {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(bind_listener(first.local_addr().unwrap()).is_err());
    }
}
