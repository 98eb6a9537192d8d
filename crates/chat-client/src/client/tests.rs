//! Tests of [`Client`] against one-connection scripted servers.

use super::*;
use chat_proto::v1::server_frame::Kind;
use chat_proto::v1::{Ack, Ping, Pong};
use chat_proto::v1::{ChatMessage, Error as ErrorFrame, ErrorCode, PresenceChange};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;

fn push(text: &str) -> ServerFrame {
    ServerFrame {
        r#ref: 0,
        kind: Some(Kind::Message(ChatMessage {
            id: "1-0".into(),
            text: text.into(),
            ..Default::default()
        })),
    }
}

fn bin(frame: &ServerFrame) -> Message {
    Message::Binary(Bytes::from(frame.encode_to_vec()))
}

async fn recv_client_frame(ws: &mut WebSocketStream<tokio::net::TcpStream>) -> ClientFrame {
    loop {
        match ws.next().await.expect("client frame").expect("ws ok") {
            Message::Binary(data) => return ClientFrame::decode(data).expect("decodes"),
            _ => continue,
        }
    }
}

/// A one-connection scripted server; returns the URL and its task.
async fn scripted<F, Fut>(script: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: FnOnce(WebSocketStream<tokio::net::TcpStream>) -> Fut + std::marker::Send + 'static,
    Fut: std::future::Future<Output = ()> + std::marker::Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        script(ws).await;
    });
    (url, task)
}

#[test]
fn take_by_ref_takes_the_first_match_only() {
    let mut events: VecDeque<ServerFrame> = [0, 5, 0, 5]
        .into_iter()
        .map(|r| ServerFrame {
            r#ref: r,
            kind: None,
        })
        .collect();
    assert_eq!(take_by_ref(&mut events, 5).map(|f| f.r#ref), Some(5));
    assert_eq!(
        events.iter().map(|f| f.r#ref).collect::<Vec<_>>(),
        [0, 0, 5]
    );
    assert!(
        take_by_ref(&mut events, 0).is_none(),
        "ref 0 never correlates"
    );
    assert!(take_by_ref(&mut events, 7).is_none());
}

#[tokio::test]
async fn reply_is_matched_by_ref_and_pushes_are_kept_in_order() {
    let (url, server) = scripted(|mut ws| async move {
        let request = recv_client_frame(&mut ws).await;
        assert!(matches!(request.kind, Some(client_frame::Kind::Send(_))));
        assert_ne!(request.r#ref, 0);
        ws.send(bin(&push("first"))).await.unwrap();
        // A reply to some other ref, then a push, then the awaited Ack.
        ws.send(bin(&ServerFrame {
            r#ref: 999,
            kind: Some(Kind::Pong(Pong::default())),
        }))
        .await
        .unwrap();
        ws.send(bin(&push("second"))).await.unwrap();
        let ack = Ack {
            id: "1-0".into(),
            room: "r".into(),
            sent_at_ms: 1,
            duplicate: false,
        };
        ws.send(bin(&ServerFrame {
            r#ref: request.r#ref,
            kind: Some(Kind::Ack(ack)),
        }))
        .await
        .unwrap();
        let next = recv_client_frame(&mut ws).await;
        let error = ErrorFrame {
            code: ErrorCode::NotInRoom as i32,
            message: "no".into(),
        };
        ws.send(bin(&ServerFrame {
            r#ref: next.r#ref,
            kind: Some(Kind::Error(error)),
        }))
        .await
        .unwrap();
        while ws.next().await.is_some() {}
    })
    .await;
    let mut client = Client::connect(&url).await.unwrap();
    let ack = client.send("r", "hi").await.unwrap();
    assert_eq!(ack.id, "1-0");
    let refs: Vec<u64> = client.buffered_events().map(|f| f.r#ref).collect();
    assert_eq!(refs, [0, 999, 0]);
    assert_eq!(client.next_event().await.unwrap(), push("first"));
    assert_eq!(client.next_event().await.unwrap().r#ref, 999);
    assert_eq!(client.next_event().await.unwrap(), push("second"));
    let err = client.leave("r").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotInRoom));
    assert!(client
        .next_event_timeout(Duration::from_millis(20))
        .await
        .unwrap()
        .is_none());
    client.close().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn refs_are_fresh_and_never_zero() {
    let (url, _server) = scripted(|mut ws| async move { while ws.next().await.is_some() {} }).await;
    let mut client = Client::connect(&url).await.unwrap();
    let a = client.fresh_ref();
    let b = client
        .start(client_frame::Kind::Ping(Ping { client_time_ms: 1 }))
        .await
        .unwrap();
    assert!(a != 0 && b != 0 && a != b);
}

#[tokio::test]
async fn server_close_is_observed_with_code_and_reason() {
    let (url, server) = scripted(|mut ws| async move {
        ws.send(bin(&push("before close"))).await.unwrap();
        ws.close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "too slow".into(),
        }))
        .await
        .unwrap();
        while ws.next().await.is_some() {}
    })
    .await;
    let mut client = Client::connect(&url).await.unwrap();
    let info = client
        .wait_closed(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a close frame");
    assert_eq!(
        info,
        CloseInfo {
            code: 1008,
            reason: "too slow".into()
        }
    );
    assert!(client.is_closed());
    // The frame sent before the close is still there, and requests now fail.
    assert_eq!(client.next_event().await.unwrap(), push("before close"));
    assert!(matches!(
        client.ping().await,
        Err(ClientError::Closed(Some(_)))
    ));
    server.await.unwrap();
}

#[tokio::test]
async fn request_times_out_when_nothing_answers() {
    let (url, _server) = scripted(|mut ws| async move { while ws.next().await.is_some() {} }).await;
    let mut client = Client::connect(&url).await.unwrap();
    client.set_timeout(Duration::from_millis(50));
    assert!(matches!(client.ping().await, Err(ClientError::Timeout(_))));
}

#[tokio::test]
async fn wait_for_skips_to_the_wanted_frame() {
    let (url, _server) = scripted(|mut ws| async move {
        let presence = ServerFrame {
            r#ref: 0,
            kind: Some(Kind::Presence(PresenceChange::default())),
        };
        ws.send(bin(&presence)).await.unwrap();
        ws.send(bin(&push("wanted"))).await.unwrap();
        while ws.next().await.is_some() {}
    })
    .await;
    let mut client = Client::connect(&url).await.unwrap();
    let text = client
        .wait_for(|frame| match &frame.kind {
            Some(Kind::Message(m)) => Some(m.text.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(text, "wanted");
}

#[tokio::test]
async fn connect_with_binds_the_local_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let _ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        peer
    });
    let local: IpAddr = "127.0.0.3".parse().unwrap();
    let _client = Client::connect_with(&url, Some(local)).await.unwrap();
    assert_eq!(server.await.unwrap().ip(), local);
}

#[tokio::test]
async fn upgrade_refusal_reports_the_http_status() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    });
    assert!(matches!(
        Client::connect(&url).await,
        Err(ClientError::Rejected { status: 503 })
    ));
}
