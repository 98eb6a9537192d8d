//! Minimal HTTP/1.1 over a raw `TcpStream`: enough for `/healthz`,
//! `/metrics`, `/api/rooms`, a refused WebSocket upgrade, and a WebSocket
//! client that completes the handshake and then says nothing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::HarnessError;

/// Bound on one raw HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` with `Connection: close`; returns the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), HarnessError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(HarnessError::io(format!("connecting to {addr}")))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(HarnessError::io("writing the request"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(HarnessError::io("reading the response"))?;
        parse_response(&response)
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| HarnessError::Timeout(format!("GET {path} on {addr}")))?
}

/// Splits a complete `Connection: close` response into status and body
/// (chunked bodies are decoded).
fn parse_response(raw: &[u8]) -> Result<(u16, String), HarnessError> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| HarnessError::Http(format!("no header end in {text:?}")))?;
    let status = status_of(head)?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn status_of(head: &str) -> Result<u16, HarnessError> {
    let line = head.lines().next().unwrap_or_default();
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HarnessError::Http(format!("bad status line {line:?}")))
}

fn dechunk(mut body: &str) -> Result<String, HarnessError> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| HarnessError::Http("bad chunk".into()))?;
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|e| HarnessError::Http(format!("bad chunk size: {e}")))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| HarnessError::Http("short chunk".into()))?;
        out.push_str(chunk);
        body = rest.get(size + 2..).unwrap_or_default();
    }
}

fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// Reads until the end of the response head; returns the status and the stream.
async fn send_upgrade(addr: SocketAddr) -> Result<(u16, TcpStream), HarnessError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(HarnessError::io(format!("connecting to {addr}")))?;
    stream
        .write_all(upgrade_request(addr).as_bytes())
        .await
        .map_err(HarnessError::io("writing the upgrade"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte so that nothing after the head (WebSocket data) is consumed.
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream
            .read(&mut byte)
            .await
            .map_err(HarnessError::io("reading the upgrade response"))?;
        if n == 0 {
            return Err(HarnessError::Http(format!(
                "connection closed in the response head: {:?}",
                String::from_utf8_lossy(&head)
            )));
        }
        head.push(byte[0]);
    }
    Ok((status_of(&String::from_utf8_lossy(&head))?, stream))
}

/// The HTTP status a WebSocket upgrade of `/ws` gets (101 when accepted).
pub async fn ws_upgrade_status(addr: SocketAddr) -> Result<u16, HarnessError> {
    tokio::time::timeout(HTTP_TIMEOUT, send_upgrade(addr))
        .await
        .map_err(|_| HarnessError::Timeout(format!("upgrade on {addr}")))?
        .map(|(status, _)| status)
}

/// Completes a WebSocket handshake on `/ws` and returns the bare TCP stream:
/// a client that will never send a frame or answer a ping unless the test
/// writes bytes itself.
pub async fn raw_ws_handshake(addr: SocketAddr) -> Result<TcpStream, HarnessError> {
    let (status, stream) = tokio::time::timeout(HTTP_TIMEOUT, send_upgrade(addr))
        .await
        .map_err(|_| HarnessError::Timeout(format!("upgrade on {addr}")))??;
    if status != 101 {
        return Err(HarnessError::Http(format!("upgrade answered {status}")));
    }
    Ok(stream)
}

/// The value of one series in a Prometheus text exposition, e.g.
/// `chat_messages_accepted_total` or `chat_errors_total{code="NOT_IN_ROOM"}`.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
        assert_eq!(parse_response(plain).unwrap(), (200, "ok\n".to_owned()));
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndrai\r\n3\r\nn!\n\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (503, "drain!\n".to_owned())
        );
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn finds_metric_series_exactly() {
        let text = "# HELP chat_frames_in_total x\n# TYPE chat_frames_in_total counter\nchat_frames_in_total 12\n\
                    chat_frames_in_total_other 5\nchat_errors_total{code=\"NOT_IN_ROOM\"} 3\n";
        assert_eq!(metric_value(text, "chat_frames_in_total"), Some(12.0));
        assert_eq!(
            metric_value(text, "chat_errors_total{code=\"NOT_IN_ROOM\"}"),
            Some(3.0)
        );
        assert_eq!(metric_value(text, "chat_frames_in"), None);
        assert_eq!(metric_value(text, "chat_missing"), None);
    }
}
