//! Opening a connection: URL to address, optional local source address, handshake.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use crate::ClientError;

/// The WebSocket stream type every client uses (plain TCP: `ws://` only).
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Host and port of a `ws://` URL, with the request to send.
pub(crate) fn parse_url(url: &str) -> Result<(Request, String, u16), ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let request = url
        .into_client_request()
        .map_err(|e| invalid(&e.to_string()))?;
    let uri = request.uri();
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => return Err(invalid("wss:// is not supported (no TLS in this client)")),
        _ => return Err(invalid("expected a ws:// url")),
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    // An IPv6 literal comes bracketed in the authority.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    Ok((request, host, port))
}

/// Connects to `url`, binding the local side to `local` when given (port 0),
/// with tungstenite's default buffers.
pub(crate) async fn open(url: &str, local: Option<IpAddr>) -> Result<Ws, ClientError> {
    open_with_config(url, local, WebSocketConfig::default()).await
}

/// Like [`open`] with a chosen WebSocket configuration (e.g. small read
/// buffers for many idle connections).
pub(crate) async fn open_with_config(
    url: &str,
    local: Option<IpAddr>,
    config: WebSocketConfig,
) -> Result<Ws, ClientError> {
    let (request, host, port) = parse_url(url)?;
    let connect_err = |source| ClientError::Connect {
        addr: format!("{host}:{port}"),
        source,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(connect_err)?
        // A local address of one family can only reach peers of that family.
        .filter(|addr| local.is_none_or(|ip| ip.is_ipv4() == addr.is_ipv4()))
        .collect();
    let mut last_err =
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to");
    let mut stream = None;
    for addr in addrs {
        match connect_one(addr, local).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let stream = stream.ok_or_else(|| connect_err(last_err))?;
    // Chat frames are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, _response)) => Ok(ws),
        Err(WsError::Http(response)) => Err(ClientError::Rejected {
            status: response.status().as_u16(),
        }),
        Err(e) => Err(ClientError::WebSocket(e)),
    }
}

async fn connect_one(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls() {
        let (request, host, port) = parse_url("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!((host.as_str(), port), ("127.0.0.1", 8080));
        assert_eq!(request.uri().path(), "/ws");
        let (_, host, port) = parse_url("ws://localhost/ws").unwrap();
        assert_eq!((host.as_str(), port), ("localhost", 80));
        let (_, host, port) = parse_url("ws://[::1]:9/ws").unwrap();
        assert_eq!((host.as_str(), port), ("::1", 9));
    }

    #[test]
    fn refuses_other_schemes() {
        for bad in ["wss://127.0.0.1/ws", "http://127.0.0.1/ws", "not a url"] {
            assert!(
                matches!(parse_url(bad), Err(ClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
