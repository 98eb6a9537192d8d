//! How a connection the server kicked ended: its close code and the KICKED
//! error that came before the close.

use std::time::Duration;

use chat_client::Client;
use chat_proto::v1::{server_frame, ErrorCode};

/// Waits (up to `timeout`, panicking after it) for the server to close
/// `client`; returns the close code and the message of the KICKED error it
/// sent before, if any.
pub async fn kicked(client: &mut Client, timeout: Duration) -> (Option<u16>, Option<String>) {
    let close = client
        .wait_closed(timeout)
        .await
        .expect("closed by the server");
    let error = client.buffered_events().find_map(|f| match &f.kind {
        Some(server_frame::Kind::Error(e)) if e.code() == ErrorCode::Kicked => {
            Some(e.message.clone())
        }
        _ => None,
    });
    (close.map(|c| c.code), error)
}
