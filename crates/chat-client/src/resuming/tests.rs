//! Tests of [`Resuming`] against scripted servers: resuming with the token
//! from the last id, retries, the ends for good, drains and offline commands.

use super::*;
use bytes::Bytes;
use chat_proto::v1::server_frame::Kind;
use chat_proto::v1::{client_frame, Ack, ChatMessage, ErrorCode, Joined, ServerFrame};
use chat_proto::v1::{ClientFrame, Error as ErrorFrame, Reconnect};
use chat_proto::Message as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// A scripted server: one listener, connections accepted one by one.
struct Server {
    listener: TcpListener,
}

impl Server {
    async fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        (Self { listener }, url)
    }

    async fn accept(&self) -> Ws {
        let (stream, _) = self.listener.accept().await.unwrap();
        tokio_tungstenite::accept_async(stream).await.unwrap()
    }
}

async fn recv(ws: &mut Ws) -> ClientFrame {
    loop {
        match ws.next().await.expect("a client frame").expect("ws ok") {
            Message::Binary(data) => return ClientFrame::decode(data).unwrap(),
            _ => continue,
        }
    }
}

async fn reply(ws: &mut Ws, r: u64, kind: Kind) {
    let frame = ServerFrame {
        r#ref: r,
        kind: Some(kind),
    };
    ws.send(Message::Binary(Bytes::from(frame.encode_to_vec())))
        .await
        .unwrap();
}

/// Expects a Hello and welcomes it with `token`; returns the Hello's resume_token.
async fn welcome(ws: &mut Ws, token: &str) -> String {
    let hello = recv(ws).await;
    let Some(client_frame::Kind::Hello(h)) = hello.kind else {
        panic!("expected Hello, got {hello:?}");
    };
    let welcome = Welcome {
        username: h.username.clone(),
        resume_token: token.into(),
        ..Default::default()
    };
    reply(ws, hello.r#ref, Kind::Welcome(welcome)).await;
    h.resume_token
}

/// Expects a Join and answers it with `history`; returns its since_id.
async fn joined(ws: &mut Ws, history: &[&str]) -> String {
    let frame = recv(ws).await;
    let Some(client_frame::Kind::Join(join)) = frame.kind else {
        panic!("expected Join, got {frame:?}");
    };
    let joined = Joined {
        room: join.room.clone(),
        members: vec!["ann".into()],
        history: history.iter().map(|id| message(&join.room, id)).collect(),
        history_truncated: false,
    };
    reply(ws, frame.r#ref, Kind::Joined(joined)).await;
    join.since_id
}

fn message(room: &str, id: &str) -> ChatMessage {
    ChatMessage {
        id: id.into(),
        room: room.into(),
        username: "bob".into(),
        text: format!("m{id}"),
        ..Default::default()
    }
}

fn config(url: &str) -> ResumeConfig {
    let mut config = ResumeConfig::new(url, "ann");
    config.attempt_timeout = Duration::from_secs(5);
    config
}

async fn next(client: &mut Resuming) -> Event {
    tokio::time::timeout(Duration::from_secs(10), client.next_event())
        .await
        .expect("an event in time")
        .expect("the client has not ended")
}

#[tokio::test]
async fn a_lost_connection_resumes_with_the_token_from_the_last_id_and_resends() {
    let (server, url) = Server::start().await;
    let script = tokio::spawn(async move {
        let mut ws = server.accept().await;
        assert_eq!(welcome(&mut ws, "t1").await, "");
        assert_eq!(joined(&mut ws, &["1-0"]).await, "");
        reply(&mut ws, 0, Kind::Message(message("r", "2-0"))).await;
        let send = recv(&mut ws).await;
        let Some(client_frame::Kind::Send(first)) = send.kind else {
            panic!("expected Send, got {send:?}");
        };
        // The connection dies before the Ack.
        drop(ws);
        let mut ws = server.accept().await;
        assert_eq!(welcome(&mut ws, "t2").await, "t1");
        assert_eq!(joined(&mut ws, &["3-0"]).await, "2-0");
        let resend = recv(&mut ws).await;
        let Some(client_frame::Kind::Send(again)) = resend.kind else {
            panic!("expected the re-send, got {resend:?}");
        };
        assert_eq!(again, first, "re-sent as it was, with its key");
        let ack = Ack {
            id: "2-5".into(),
            room: "r".into(),
            sent_at_ms: 1,
            duplicate: true,
        };
        reply(&mut ws, resend.r#ref, Kind::Ack(ack)).await;
        // A third session must carry the second token and resume after 3-0.
        drop(ws);
        let mut ws = server.accept().await;
        assert_eq!(welcome(&mut ws, "t3").await, "t2");
        assert_eq!(joined(&mut ws, &[]).await, "3-0");
        ws
    });
    let mut client = Resuming::connect(config(&url)).await.unwrap();
    assert_eq!(client.welcome().resume_token, "t1");
    client.handle().join("r").await.unwrap();
    let Event::Joined { joined, rejoin } = next(&mut client).await else {
        panic!("expected Joined")
    };
    assert!(!rejoin);
    assert_eq!(joined.history[0].id, "1-0");
    assert!(matches!(next(&mut client).await, Event::Message(m) if m.id == "2-0"));
    let key = client.handle().send("r", "hello").await.unwrap();
    assert!(matches!(
        next(&mut client).await,
        Event::Disconnected { .. }
    ));
    let Event::Joined { joined, rejoin } = next(&mut client).await else {
        panic!("expected the re-join")
    };
    assert!(rejoin);
    assert_eq!(joined.history[0].id, "3-0");
    let Event::Resumed(resumed) = next(&mut client).await else {
        panic!("expected Resumed")
    };
    assert_eq!(
        (resumed.attempts, resumed.name_taken, resumed.rooms),
        (1, 0, 1)
    );
    assert!(resumed.with_token);
    assert_eq!(resumed.welcome.resume_token, "t2");
    let Event::Acked { client_msg_id, ack } = next(&mut client).await else {
        panic!("expected the Ack of the re-send")
    };
    assert_eq!(
        (client_msg_id.as_str(), ack.duplicate),
        (key.as_str(), true)
    );
    assert!(matches!(
        next(&mut client).await,
        Event::Disconnected { .. }
    ));
    assert!(matches!(
        next(&mut client).await,
        Event::Joined { rejoin: true, .. }
    ));
    assert!(matches!(next(&mut client).await, Event::Resumed(_)));
    let _ws = script.await.unwrap();
}

#[tokio::test]
async fn a_taken_name_is_retried_and_counted() {
    let (server, url) = Server::start().await;
    let script = tokio::spawn(async move {
        let mut ws = server.accept().await;
        welcome(&mut ws, "t1").await;
        drop(ws);
        let mut ws = server.accept().await;
        let hello = recv(&mut ws).await;
        let taken = ErrorFrame {
            code: ErrorCode::UsernameTaken as i32,
            message: "taken".into(),
        };
        reply(&mut ws, hello.r#ref, Kind::Error(taken)).await;
        let mut ws = server.accept().await;
        assert_eq!(welcome(&mut ws, "t2").await, "t1");
        ws
    });
    let mut client = Resuming::connect(config(&url)).await.unwrap();
    assert!(matches!(
        next(&mut client).await,
        Event::Disconnected { .. }
    ));
    let Event::Resumed(resumed) = next(&mut client).await else {
        panic!("expected Resumed")
    };
    assert_eq!((resumed.attempts, resumed.name_taken), (2, 1));
    let _ws = script.await.unwrap();
}

#[tokio::test]
async fn session_replaced_ends_the_client_for_good() {
    let (server, url) = Server::start().await;
    let script = tokio::spawn(async move {
        let mut ws = server.accept().await;
        welcome(&mut ws, "t1").await;
        let replaced = ErrorFrame {
            code: ErrorCode::SessionReplaced as i32,
            message: "continued elsewhere".into(),
        };
        reply(&mut ws, 0, Kind::Error(replaced)).await;
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Library(4002),
                reason: "replaced".into(),
            }))
            .await;
        server
    });
    let mut client = Resuming::connect(config(&url)).await.unwrap();
    assert_eq!(next(&mut client).await, Event::Ended(EndReason::Replaced));
    assert!(client.next_event().await.is_none(), "nothing after Ended");
    assert!(client.handle().join("r").await.is_err());
    // Nobody came back: the listener has no connection waiting.
    let server = script.await.unwrap();
    let pending = tokio::time::timeout(Duration::ZERO, server.listener.accept()).await;
    assert!(pending.is_err(), "the client reconnected after 4002");
}

#[tokio::test]
async fn close_codes_4001_and_4003_end_the_client() {
    for (code, reason) in [(4001, EndReason::Kicked), (4003, EndReason::InvalidToken)] {
        let (server, url) = Server::start().await;
        tokio::spawn(async move {
            let mut ws = server.accept().await;
            welcome(&mut ws, "t1").await;
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::Library(code),
                    reason: "bye".into(),
                }))
                .await;
            while ws.next().await.is_some() {}
        });
        let mut client = Resuming::connect(config(&url)).await.unwrap();
        assert_eq!(next(&mut client).await, Event::Ended(reason));
    }
}

#[tokio::test]
async fn a_drain_moves_to_a_new_connection_before_leaving_the_old_one() {
    let (server, url) = Server::start().await;
    let script = tokio::spawn(async move {
        let mut old = server.accept().await;
        welcome(&mut old, "t1").await;
        joined(&mut old, &["1-0"]).await;
        let reconnect = Reconnect {
            reason: "drain".into(),
            after_ms: 0,
        };
        reply(&mut old, 0, Kind::Reconnect(reconnect)).await;
        let mut new = server.accept().await;
        assert_eq!(welcome(&mut new, "t2").await, "t1");
        assert_eq!(joined(&mut new, &[]).await, "1-0");
        // Only now does the old connection go away.
        while let Some(Ok(_)) = old.next().await {}
        new
    });
    let mut client = Resuming::connect(config(&url)).await.unwrap();
    client.handle().join("r").await.unwrap();
    assert!(matches!(
        next(&mut client).await,
        Event::Joined { rejoin: false, .. }
    ));
    assert!(
        matches!(next(&mut client).await, Event::Other(_)),
        "the Reconnect"
    );
    assert!(matches!(
        next(&mut client).await,
        Event::Joined { rejoin: true, .. }
    ));
    let Event::Resumed(resumed) = next(&mut client).await else {
        panic!("expected Resumed")
    };
    assert_eq!(resumed.attempts, 1);
    let _new = script.await.unwrap();
}

#[tokio::test]
async fn commands_while_disconnected_apply_to_the_next_connection() {
    let (server, url) = Server::start().await;
    let script = tokio::spawn(async move {
        let mut ws = server.accept().await;
        welcome(&mut ws, "t1").await;
        drop(ws);
        let mut ws = server.accept().await;
        welcome(&mut ws, "t2").await;
        // Whether the commands reached the client before or during its
        // attempt, the new connection gets them, in order.
        let mut seen = Vec::new();
        while !seen.iter().any(|s: &String| s.starts_with("send")) {
            let frame = recv(&mut ws).await;
            seen.push(match frame.kind {
                Some(client_frame::Kind::Join(join)) => {
                    let joined = Joined {
                        room: join.room.clone(),
                        ..Default::default()
                    };
                    reply(&mut ws, frame.r#ref, Kind::Joined(joined)).await;
                    format!("join {} {}", join.room, join.since_id)
                }
                Some(client_frame::Kind::Leave(leave)) => {
                    let left = chat_proto::v1::Left {
                        room: leave.room.clone(),
                    };
                    reply(&mut ws, frame.r#ref, Kind::Left(left)).await;
                    format!("leave {}", leave.room)
                }
                Some(client_frame::Kind::Send(send)) => format!("send {}", send.text),
                other => panic!("unexpected {other:?}"),
            });
        }
        (ws, seen)
    });
    let mut client = Resuming::connect(config(&url)).await.unwrap();
    assert!(matches!(
        next(&mut client).await,
        Event::Disconnected { .. }
    ));
    client.handle().join_with("r", "5-0", 0).await.unwrap();
    client.handle().join("gone").await.unwrap();
    client.handle().leave("gone").await.unwrap();
    client.handle().send("r", "queued").await.unwrap();
    let (_ws, seen) = script.await.unwrap();
    // Offline, the Join and Leave of "gone" cancel out; after the attempt
    // they go out as they came.
    let offline = ["join r 5-0", "send queued"];
    let online = ["join r 5-0", "join gone ", "leave gone", "send queued"];
    assert!(seen == offline || seen == online, "{seen:?}");
    let mut events = Vec::new();
    while events.len() < 3 {
        match next(&mut client).await {
            Event::Joined { joined, rejoin } => {
                // Joined for a room never joined before is not a re-join.
                assert!(!rejoin);
                // "gone" is joined, then left, when the commands came online.
                if joined.room != "gone" {
                    events.push(format!("joined {}", joined.room));
                }
            }
            Event::Left { room } => events.push(format!("left {room}")),
            Event::Resumed(_) => events.push("resumed".into()),
            other => panic!("unexpected {other:?}"),
        }
    }
    events.sort();
    assert_eq!(events, ["joined r", "left gone", "resumed"]);
}
