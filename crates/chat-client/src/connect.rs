//! Opening a connection: URL to address, optional local source address, the
//! TLS handshake for `wss://` (rustls, with the caller's configuration), the
//! WebSocket handshake.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

use crate::ClientError;

/// The WebSocket stream type every client uses: plain TCP for `ws://`, TLS
/// over TCP for `wss://`.
pub(crate) type Ws = WebSocketStream<Either<TcpStream, TlsStream<TcpStream>>>;

/// Host and port of a `ws://` or `wss://` URL, with the request to send and
/// whether it is `wss://`.
pub(crate) fn parse_url(url: &str) -> Result<(Request, String, u16, bool), ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let request = url
        .into_client_request()
        .map_err(|e| invalid(&e.to_string()))?;
    let uri = request.uri();
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(invalid("expected a ws:// or wss:// url")),
    };
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    // An IPv6 literal comes bracketed in the authority.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    Ok((request, host, port, secure))
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
    open_with_tls(url, local, config, None).await
}

/// Like [`open_with_config`]; a `wss://` URL is verified with `tls` (whose
/// roots say which servers to trust). `wss://` without `tls` is refused.
pub(crate) async fn open_with_tls(
    url: &str,
    local: Option<IpAddr>,
    config: WebSocketConfig,
    tls: Option<Arc<ClientConfig>>,
) -> Result<Ws, ClientError> {
    let (request, host, port, secure) = parse_url(url)?;
    let tls = match (secure, tls) {
        (false, _) => None,
        (true, Some(tls)) => Some(tls),
        (true, None) => {
            return Err(ClientError::InvalidUrl {
                url: url.to_owned(),
                reason: "wss:// needs a TLS configuration (Client::connect_with_tls)".into(),
            })
        }
    };
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
    let stream = match tls {
        None => Either::Left(stream),
        Some(tls) => {
            let name = ServerName::try_from(host.clone()).map_err(|e| ClientError::InvalidUrl {
                url: url.to_owned(),
                reason: format!("not a TLS server name: {e}"),
            })?;
            let stream = TlsConnector::from(tls)
                .connect(name, stream)
                .await
                .map_err(connect_err)?;
            Either::Right(stream)
        }
    };
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
        let (request, host, port, secure) = parse_url("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!((host.as_str(), port, secure), ("127.0.0.1", 8080, false));
        assert_eq!(request.uri().path(), "/ws");
        let (_, host, port, _) = parse_url("ws://localhost/ws").unwrap();
        assert_eq!((host.as_str(), port), ("localhost", 80));
        let (_, host, port, _) = parse_url("ws://[::1]:9/ws").unwrap();
        assert_eq!((host.as_str(), port), ("::1", 9));
        let (_, host, port, secure) = parse_url("wss://localhost/ws").unwrap();
        assert_eq!((host.as_str(), port, secure), ("localhost", 443, true));
    }

    #[test]
    fn refuses_other_schemes() {
        for bad in ["https://127.0.0.1/ws", "http://127.0.0.1/ws", "not a url"] {
            assert!(
                matches!(parse_url(bad), Err(ClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn wss_without_a_tls_configuration_is_refused() {
        let refused =
            open_with_config("wss://127.0.0.1:1/ws", None, WebSocketConfig::default()).await;
        assert!(
            matches!(refused, Err(ClientError::InvalidUrl { .. })),
            "{refused:?}"
        );
    }
}
