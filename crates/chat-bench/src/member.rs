//! Setting up benchmark members: connect, `Hello`, `Join`, with names and
//! rooms unique to the run so that runs never see each other's traffic.

use std::net::IpAddr;
use std::time::Duration;

use chat_client::{Client, ClientError, WebSocketConfig};

/// How long one member's set-up may take before it counts as failed.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A short id unique to this run (process id and start time), for names.
pub(crate) fn run_id() -> String {
    let now = crate::report::unix_ms();
    format!(
        "{:06x}",
        (u64::from(std::process::id()) << 20 ^ now) & 0xff_ffff
    )
}

/// WebSocket buffers for a benchmark connection: `read_buffer` bytes of
/// read buffer (tungstenite's default is 128 KiB per connection). Writes
/// are buffered until flushed, so a batch of sends is one write.
pub(crate) fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(read_buffer)
}

/// Connects, says `Hello` as `username` and joins `room` (no history replay).
pub(crate) async fn join(
    url: &str,
    local: Option<IpAddr>,
    username: &str,
    room: &str,
    config: WebSocketConfig,
) -> Result<Client, ClientError> {
    let setup = async {
        let mut client = Client::connect_with_config(url, local, config).await?;
        client.hello(username).await?;
        client.join_with(room, "", 1).await?;
        Ok(client)
    };
    tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .map_err(|_| ClientError::Timeout(SETUP_TIMEOUT))?
}

/// A short, stable description of a set-up failure for counting by kind.
pub(crate) fn failure_kind(error: &ClientError) -> String {
    match error {
        ClientError::Connect { source, .. } => format!("connect: {}", source.kind()),
        ClientError::Rejected { status } => format!("upgrade refused: HTTP {status}"),
        ClientError::Server { code, .. } => format!("server error {}", code.as_str_name()),
        ClientError::Closed(Some(info)) => format!("closed by server: {}", info.code),
        ClientError::Closed(None) => "closed".into(),
        ClientError::Timeout(_) => "timed out".into(),
        ClientError::WebSocket(e) => format!("websocket: {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_short_hex() {
        let id = run_id();
        assert_eq!(id.len(), 6);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn failures_are_grouped_by_kind() {
        let refused = ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(failure_kind(&refused), "connect: connection refused");
        assert_eq!(
            failure_kind(&ClientError::Rejected { status: 503 }),
            "upgrade refused: HTTP 503"
        );
    }
}
