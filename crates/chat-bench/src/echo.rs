//! `chat-bench echo-server`: a TCP echo server, the backend of the ping-pong
//! scenario. A connection whose first byte is `G` is taken for an HTTP
//! health check (`GET /healthz`, as chat-lb sends) and answered 200, so a
//! balancer with active health checks keeps it in rotation; pings never
//! start with `G` (see [`crate::payload::PING_MAGIC`]).

use std::io::Write as _;

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::cli::EchoServerArgs;

/// Read buffer per connection.
const BUFFER: usize = 16 * 1024;

const HEALTHY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";

/// Binds every `--listen` address, prints `echo-server listening on ADDR`
/// for each, and serves until SIGTERM or SIGINT.
pub(crate) async fn run(args: EchoServerArgs) -> Result<()> {
    let mut servers = JoinSet::new();
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        println!("echo-server listening on {local}");
        servers.spawn(serve(listener));
    }
    std::io::stdout().flush()?;
    tokio::select! {
        () = shutdown_signal() => Ok(()),
        Some(result) = servers.join_next() => result.context("echo server task failed")?,
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Accepts forever; a failed accept (e.g. out of files) is retried after a pause.
pub(crate) async fn serve(listener: TcpListener) -> Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(async move {
                    if let Err(e) = echo(stream).await {
                        eprintln!("echo-server: {peer}: {e}");
                    }
                });
            }
            Err(e) => {
                eprintln!("echo-server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Echoes until the client closes (then closes too), or answers a health check.
async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; BUFFER];
    let mut first = true;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return stream.shutdown().await,
            Ok(n) => n,
            Err(e) if is_disconnect(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        if first && buf[0] == b'G' {
            stream.write_all(HEALTHY).await?;
            return stream.shutdown().await;
        }
        first = false;
        match stream.write_all(&buf[..n]).await {
            Ok(()) => {}
            Err(e) if is_disconnect(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted)
}

/// Starts an echo server on `addr` in this runtime; returns its address (for tests).
#[cfg(test)]
pub(crate) async fn spawn(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(serve(listener));
    local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes_bytes_and_answers_health_checks() {
        let addr = spawn("127.0.0.1:0".parse().unwrap()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let ping = [crate::payload::PING_MAGIC, 1, 2, 3];
        client.write_all(&ping).await.unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, ping);

        let mut check = TcpStream::connect(addr).await.unwrap();
        check
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        check.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    }
}
