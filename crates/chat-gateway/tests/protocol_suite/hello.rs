//! Hello rules: the first frame, username validation and uniqueness, Welcome.

use std::time::Duration;

use anyhow::ensure;
use bytes::Bytes;
use chat_client::{now_ms, WsMessage};
use chat_proto::v1::{
    client_frame, ClientFrame, ErrorCode, FetchHistory, Hello, Join, Leave, Ping, Send, Typing,
};
use chat_proto::Message as _;
use chat_test_support::BackendKind;
use tokio::time::Instant;

use super::{assert_code, claim_within, error_of, start};

fn hello_kind(username: &str) -> client_frame::Kind {
    client_frame::Kind::Hello(Hello {
        username: username.to_owned(),
        ..Default::default()
    })
}

pub(crate) async fn first_frame_must_be_hello(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut client = server.connect().await?;
    let room = || "lobby".to_owned();
    let before_hello = [
        client_frame::Kind::Join(Join {
            room: room(),
            ..Default::default()
        }),
        client_frame::Kind::Send(Send {
            room: room(),
            text: "hi".into(),
            ..Default::default()
        }),
        client_frame::Kind::Ping(Ping { client_time_ms: 1 }),
        client_frame::Kind::Leave(Leave { room: room() }),
        client_frame::Kind::Typing(Typing {
            room: room(),
            active: true,
        }),
        client_frame::Kind::FetchHistory(FetchHistory {
            room: room(),
            ..Default::default()
        }),
    ];
    for frame in before_hello {
        let what = format!("{frame:?}");
        let reply = client.request(frame).await?;
        assert_eq!(
            error_of(&reply).map(|(code, _)| code),
            Some(ErrorCode::NotAuthenticated),
            "{what} before Hello"
        );
    }

    // A frame without a kind gets BAD_FRAME with its ref, also before Hello...
    let r = client.fresh_ref();
    client
        .send_frame(ClientFrame {
            r#ref: r,
            kind: None,
        })
        .await?;
    let reply = client.wait_reply(r).await?;
    assert_eq!(
        error_of(&reply),
        Some((ErrorCode::BadFrame, r)),
        "kind-less frame before Hello"
    );
    // ...and so does a kind this server does not know (field 20).
    let r = client.fresh_ref();
    let mut unknown = ClientFrame {
        r#ref: r,
        kind: None,
    }
    .encode_to_vec();
    unknown.extend_from_slice(&[0xa2, 0x01, 0x00]);
    client
        .send_raw(WsMessage::Binary(Bytes::from(unknown)))
        .await?;
    let reply = client.wait_reply(r).await?;
    assert_eq!(
        error_of(&reply),
        Some((ErrorCode::BadFrame, r)),
        "unknown kind before Hello"
    );
    assert_eq!(
        client.buffered_events().len(),
        0,
        "nothing but the answers arrived"
    );

    // None of that prevents the Hello, after which the same frames work.
    client.hello("alice").await?;
    client.ping().await?;
    client.join("lobby").await?;
    Ok(())
}

pub(crate) async fn username_is_trimmed_and_normalised(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let cases = [
        ("  Bob \t", "Bob".to_owned()),
        // Unicode White_Space, not only ASCII.
        ("\u{3000}Zo\u{eb}\u{a0}", "Zo\u{eb}".to_owned()),
        // Shown NFC-normalised.
        ("Jose\u{301}", "Jos\u{e9}".to_owned()),
        // 32 characters, counted after NFC (64 scalars before), or 4 bytes each.
        (&*"a".repeat(32), "a".repeat(32)),
        (&*"e\u{301}".repeat(32), "\u{e9}".repeat(32)),
        (&*"\u{1F600}".repeat(32), "\u{1F600}".repeat(32)),
    ];
    let mut clients = Vec::new();
    let mut shown = Vec::new();
    for (raw, expected) in &cases {
        let mut client = server.connect().await?;
        let welcome = client.hello(raw).await?;
        assert_eq!(&welcome.username, expected, "Welcome.username for {raw:?}");
        client.join("lobby").await?;
        shown.push(expected.clone());
        clients.push(client);
    }
    // Others see the accepted form too.
    let mut observer = server.client("observer").await?;
    let joined = observer.join("lobby").await?;
    shown.push("observer".into());
    shown.sort();
    assert_eq!(joined.members, shown);
    Ok(())
}

pub(crate) async fn invalid_usernames_are_refused_and_hello_may_be_retried(
    kind: BackendKind,
) -> anyhow::Result<()> {
    // Many refusals on one connection: the cap on them out of the way.
    let server = start(kind, &["--max-failed-hellos", "1000"]).await?;
    let mut client = server.connect().await?;
    let too_long = ["a".repeat(33), "\u{e9}".repeat(33), "e\u{301}".repeat(33)];
    let bad = [
        "",
        "   ",
        "\t\n",
        "\u{3000}",
        "a\u{7}b",
        "x\u{7f}",
        "a\u{0}",
        "a\u{200B}b",
        "ab\u{202E}",
        "a\u{200D}b",
        "\u{FEFF}name",
    ];
    for name in bad
        .iter()
        .copied()
        .chain(too_long.iter().map(String::as_str))
    {
        assert_code(client.hello(name).await, ErrorCode::InvalidUsername);
    }
    // Every refusal left the connection waiting for a Hello.
    let welcome = client.hello("valid").await?;
    assert_eq!(welcome.username, "valid");
    client.ping().await?;
    Ok(())
}

pub(crate) async fn usernames_are_unique_after_nfc_and_lowercasing(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let _alice = server.client("Alice").await?;
    let _jose = server.client("Jos\u{e9}").await?;
    let mut other = server.connect().await?;
    for taken in [
        "Alice",
        "alice",
        "ALICE",
        "  aLiCe ",
        "jos\u{e9}",
        "JOSE\u{301}",
    ] {
        assert_code(other.hello(taken).await, ErrorCode::UsernameTaken);
    }
    // After USERNAME_TAKEN another Hello is allowed.
    let welcome = other.hello("Alice2").await?;
    assert_eq!(welcome.username, "Alice2");
    Ok(())
}

pub(crate) async fn hello_after_welcome_is_bad_frame(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut client = server.client("first").await?;
    for name in ["second", "first"] {
        let reply = client.request(hello_kind(name)).await?;
        assert_eq!(
            error_of(&reply).map(|(code, _)| code),
            Some(ErrorCode::BadFrame),
            "Hello {name:?} after Welcome"
        );
    }
    // The connection stays usable, under its first name, and the refused
    // name was not claimed.
    client.ping().await?;
    let joined = client.join("lobby").await?;
    assert_eq!(joined.members, ["first"]);
    server.client("second").await?;
    Ok(())
}

pub(crate) async fn name_is_free_again_soon_after_close(kind: BackendKind) -> anyhow::Result<()> {
    // The Hellos that poll for the name are refused until it is free.
    let server = start(kind, &["--max-failed-hellos", "1000"]).await?;
    let limit = Duration::from_secs(5);

    // A clean WebSocket close.
    let mut alice = server.client("Alice").await?;
    alice.join("lobby").await?;
    alice.close().await?;
    let closed = Instant::now();
    let mut next = server.connect().await?;
    claim_within(&mut next, "alice", closed, limit).await?;

    // A connection that just drops (no close frame).
    let mut bob = server.client("Bob").await?;
    bob.join("lobby").await?;
    drop(bob);
    let dropped = Instant::now();
    let mut next = server.connect().await?;
    claim_within(&mut next, "BOB", dropped, limit).await?;
    Ok(())
}

pub(crate) async fn welcome_reports_the_configured_limits(kind: BackendKind) -> anyhow::Result<()> {
    let args = [
        "--max-text-bytes",
        "1234",
        "--max-rooms",
        "3",
        "--messages-per-second",
        "7",
        "--message-burst",
        "9",
    ];
    let server = start(kind, &args).await?;
    let mut a = server.connect().await?;
    let welcome = a.hello("alice").await?;
    let limits = welcome.limits.unwrap_or_default();
    assert_eq!(
        (
            limits.max_text_bytes,
            limits.max_rooms,
            limits.messages_per_second,
            limits.message_burst
        ),
        (1234, 3, 7, 9)
    );
    assert_eq!(welcome.gateway_id, server.id());
    ensure!(
        welcome.server_time_ms.abs_diff(now_ms()) < 60_000,
        "server time {} is off",
        welcome.server_time_ms
    );
    let other = server.connect().await?.hello("bob").await?;
    ensure!(
        !welcome.session_id.is_empty() && welcome.session_id != other.session_id,
        "session ids must be distinct"
    );
    Ok(())
}
