//! Sessions over an in-memory socket on the embedded bridge: the
//! transport's close handshakes, the registry kept by `Registration`, and a
//! drain that waits for the session tasks.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use chat_bridge::{ControlCommand, EventSink, MemoryBridge};
use chat_proto::v1::{
    client_frame, server_frame, ClientFrame, ErrorCode, Hello, Ping, ServerFrame,
};
use chat_proto::Message as _;
use clap::Parser as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::DuplexStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::config::Config;
use crate::conn::close_code;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::state::Shared;

type Client = WebSocketStream<DuplexStream>;

/// A gateway's state on the embedded bridge, configured with `flags`.
fn shared(flags: &[&str]) -> Arc<Shared> {
    let config = Config::parse_from(["chat-gateway"].iter().chain(flags));
    let metrics = Arc::new(Metrics::default());
    let (control, _) = tokio::sync::mpsc::channel(8);
    let hub = Hub::new(metrics.clone(), control);
    let sink: Arc<dyn EventSink> = hub.clone();
    let bridge = Arc::new(MemoryBridge::new(config.history_len as usize, sink));
    Shared::new(
        config,
        "gw".into(),
        "gw~1".into(),
        bridge,
        hub,
        metrics,
        None,
    )
}

/// Starts a session on `shared`, as an upgrade does, and returns the client's end.
async fn connect(shared: &Arc<Shared>) -> Client {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let sessions = shared.sessions.clone();
    let shared = shared.clone();
    sessions.spawn(async move {
        let ws = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        super::run(ws, shared, peer).await;
    });
    WebSocketStream::from_raw_socket(client, Role::Client, None).await
}

async fn request(client: &mut Client, r: u64, kind: client_frame::Kind) {
    let frame = ClientFrame {
        r#ref: r,
        kind: Some(kind),
    };
    let data = frame.encode_to_vec();
    client.send(Message::Binary(data.into())).await.unwrap();
}

async fn hello(client: &mut Client, name: &str) {
    let hello = Hello {
        username: name.into(),
        ..Hello::default()
    };
    request(client, 1, client_frame::Kind::Hello(hello)).await;
    let welcome = frame(client).await;
    assert!(
        matches!(welcome.kind, Some(server_frame::Kind::Welcome(_))),
        "{welcome:?}"
    );
}

/// What the client gets next, pings aside.
#[derive(Debug)]
enum Got {
    Frame(ServerFrame),
    /// A close frame's code and reason.
    Close(u16, String),
    /// The connection ended.
    End,
}

async fn next(client: &mut Client) -> Got {
    loop {
        let got = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("the gateway answers in time");
        return match got {
            Some(Ok(Message::Binary(data))) => Got::Frame(ServerFrame::decode(data).unwrap()),
            Some(Ok(Message::Close(Some(frame)))) => {
                Got::Close(u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => Got::End,
            Some(Ok(_)) => continue,
        };
    }
}

async fn frame(client: &mut Client) -> ServerFrame {
    match next(client).await {
        Got::Frame(frame) => frame,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Waits until every session task has ended.
async fn sessions_ended(shared: &Shared) {
    shared.sessions.close();
    tokio::time::timeout(Duration::from_secs(10), shared.sessions.wait())
        .await
        .expect("the sessions end");
}

#[tokio::test]
async fn a_connection_is_registered_while_open_and_its_goodbye_frees_its_name() {
    let shared = shared(&[]);
    let mut ann = connect(&shared).await;
    hello(&mut ann, "ann").await;
    assert_eq!(shared.conns.lock().len(), 1);
    assert_eq!(shared.metrics.connections_open.load(Relaxed), 1);
    request(
        &mut ann,
        2,
        client_frame::Kind::Ping(Ping { client_time_ms: 7 }),
    )
    .await;
    let pong = frame(&mut ann).await;
    assert_eq!(pong.r#ref, 2);
    assert!(matches!(pong.kind, Some(server_frame::Kind::Pong(p)) if p.client_time_ms == 7));

    ann.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    while !matches!(next(&mut ann).await, Got::End) {}
    sessions_ended(&shared).await;
    assert!(shared.conns.lock().is_empty());
    assert_eq!(shared.metrics.connections_open.load(Relaxed), 0);
    assert_eq!(shared.metrics.connections_total.load(Relaxed), 1);
    // A goodbye (1000) does not linger: the name is free at once.
    let mut again = connect(&shared).await;
    hello(&mut again, "ann").await;
}

#[tokio::test]
async fn a_kicked_session_gets_its_error_before_the_close_4001() {
    let shared = shared(&[]);
    let mut ann = connect(&shared).await;
    hello(&mut ann, "ann").await;
    let kick = ControlCommand::Kick {
        key: "ann".into(),
        room: None,
        reason: String::new(),
    };
    crate::control::apply(&shared, kick);
    let error = frame(&mut ann).await;
    let Some(server_frame::Kind::Error(error)) = error.kind else {
        panic!("expected an Error, got {error:?}");
    };
    assert_eq!(error.code, ErrorCode::Kicked as i32);
    match next(&mut ann).await {
        Got::Close(code, reason) => {
            assert_eq!((code, reason.as_str()), (close_code::KICKED, "kicked"))
        }
        other => panic!("expected the close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_without_a_hello_in_time_is_closed_1008_saying_why() {
    let shared = shared(&["--hello-timeout-ms", "50"]);
    let mut client = connect(&shared).await;
    match next(&mut client).await {
        Got::Close(code, reason) => {
            assert_eq!(
                (code, reason.as_str()),
                (close_code::POLICY, "no Hello in time")
            )
        }
        other => panic!("expected the close, got {other:?}"),
    }
    sessions_ended(&shared).await;
}

#[tokio::test]
async fn a_text_message_is_closed_1003() {
    let shared = shared(&[]);
    let mut client = connect(&shared).await;
    client.send(Message::Text("hello".into())).await.unwrap();
    match next(&mut client).await {
        Got::Close(code, reason) => {
            assert_eq!(code, close_code::UNSUPPORTED);
            assert!(
                reason.starts_with("text messages are not supported"),
                "{reason}"
            );
        }
        other => panic!("expected the close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_drain_waits_for_the_sessions_and_closes_the_rest_at_its_deadline() {
    let shared = shared(&["--drain-timeout-ms", "300"]);
    let mut stays = connect(&shared).await;
    hello(&mut stays, "stays").await;
    let started = Instant::now();
    let drain = tokio::spawn({
        let shared = shared.clone();
        async move { crate::server::drain(&shared).await }
    });
    let reconnect = frame(&mut stays).await;
    assert!(matches!(
        reconnect.kind,
        Some(server_frame::Kind::Reconnect(_))
    ));
    match next(&mut stays).await {
        Got::Close(code, _) => assert_eq!(code, close_code::GOING_AWAY),
        other => panic!("expected the close, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    while !matches!(next(&mut stays).await, Got::End) {}
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("the drain ends once the session has")
        .unwrap();
    assert!(shared.conns.lock().is_empty());
}

#[tokio::test]
async fn a_drain_ends_when_the_last_session_does() {
    let shared = shared(&["--drain-timeout-ms", "60000"]);
    let mut leaves = connect(&shared).await;
    hello(&mut leaves, "leaves").await;
    let drain = tokio::spawn({
        let shared = shared.clone();
        async move { crate::server::drain(&shared).await }
    });
    let reconnect = frame(&mut leaves).await;
    assert!(matches!(
        reconnect.kind,
        Some(server_frame::Kind::Reconnect(_))
    ));
    leaves.close(None).await.unwrap();
    while !matches!(next(&mut leaves).await, Got::End) {}
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("the drain does not wait for its deadline")
        .unwrap();
}
