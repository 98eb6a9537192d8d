//! Delivery rules: every member gets every message as sent, in one order;
//! presence and typing go to the others; Ping/Pong.

use anyhow::{bail, ensure};
use chat_client::now_ms;
use chat_proto::v1::{presence_change, server_frame::Kind, ErrorCode};
use chat_test_support::BackendKind;

use super::{
    assert_code, id, marker, messages, next_message, next_presence, publish, room_with, start, FAST,
};

pub(crate) async fn message_reaches_every_member_exactly_as_sent(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut members = room_with(&server, "lobby", &["alice", "bob", "carol"]).await?;
    let mut outsider = server.client("dave").await?;
    outsider.join("other").await?;

    // Surrounding whitespace, decomposed accents, emoji: stored and delivered as sent.
    for (sender, text, key) in [
        (0, "  he\u{301}llo \u{1F44B}\n\tworld  ", "c-1"),
        (1, "Cafe\u{301}", ""),
    ] {
        let ack = members[sender].send_with_id("lobby", text, key).await?;
        ensure!(ack.room == "lobby" && !ack.duplicate, "ack {ack:?}");
        id(&ack.id)?;
        for (i, member) in members.iter_mut().enumerate() {
            let m = next_message(member).await?;
            assert_eq!(
                (
                    m.id.as_str(),
                    m.room.as_str(),
                    m.username.as_str(),
                    m.text.as_str()
                ),
                (ack.id.as_str(), "lobby", ["alice", "bob"][sender], text),
                "as seen by member {i}"
            );
            assert_eq!(
                (m.sent_at_ms, m.client_msg_id.as_str(), m.system),
                (ack.sent_at_ms, key, false)
            );
        }
    }
    // Not to members of other rooms.
    marker(&mut outsider, "other", "only mine", &mut []).await?;
    assert_code(outsider.send("lobby", "x").await, ErrorCode::NotInRoom);
    // Stored as sent, too.
    let joined = outsider.join("lobby").await?;
    let stored: Vec<&str> = joined.history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        stored,
        ["  he\u{301}llo \u{1F44B}\n\tworld  ", "Cafe\u{301}"]
    );
    Ok(())
}

pub(crate) async fn all_members_see_one_order_with_increasing_ids(
    kind: BackendKind,
) -> anyhow::Result<()> {
    const SENDERS: usize = 3;
    const EACH: usize = 40;
    let server = start(kind, FAST).await?;
    let names = ["s0", "s1", "s2", "watcher"];
    let clients = room_with(&server, "lobby", &names).await?;
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let acks = if i < SENDERS {
                publish(&mut client, "lobby", &format!("s{i}-"), EACH).await?
            } else {
                Vec::new()
            };
            let seen = messages(&mut client, SENDERS * EACH).await?;
            anyhow::Ok((acks, seen))
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await??);
    }

    let reference: Vec<(String, String)> = results[0]
        .1
        .iter()
        .map(|m| (m.id.clone(), m.text.clone()))
        .collect();
    for (i, (_, seen)) in results.iter().enumerate() {
        let order: Vec<(String, String)> = seen
            .iter()
            .map(|m| (m.id.clone(), m.text.clone()))
            .collect();
        assert_eq!(
            order, reference,
            "{} sees the same order as {}",
            names[i], names[0]
        );
    }
    // Ids are "<ms>-<seq>" and strictly increasing as pairs.
    for pair in reference.windows(2) {
        ensure!(
            id(&pair[0].0)? < id(&pair[1].0)?,
            "{} then {}",
            pair[0].0,
            pair[1].0
        );
    }
    for (message_id, _) in &reference {
        ensure!(
            id(message_id)?.to_string() == *message_id,
            "{message_id} is not <ms>-<seq>"
        );
    }
    // Each sender's messages appear in its sending order, under their Ack ids.
    for (i, (acks, _)) in results.iter().take(SENDERS).enumerate() {
        let prefix = format!("s{i}-");
        let own: Vec<&(String, String)> = reference
            .iter()
            .filter(|(_, text)| text.starts_with(&prefix))
            .collect();
        let expected: Vec<(String, String)> = acks
            .iter()
            .enumerate()
            .map(|(n, ack)| (ack.clone(), format!("{prefix}{n}")))
            .collect();
        assert_eq!(own.into_iter().cloned().collect::<Vec<_>>(), expected);
    }
    Ok(())
}

pub(crate) async fn presence_goes_to_others_never_to_the_subject(
    kind: BackendKind,
) -> anyhow::Result<()> {
    use presence_change::Kind::{Joined, Left};
    let server = start(kind, &[]).await?;
    let mut others = room_with(&server, "lobby", &["alice", "bob"]).await?;
    let mut elsewhere = server.client("eve").await?;
    elsewhere.join("other").await?;

    async fn expect_all(
        others: &mut [chat_client::Client],
        who: &str,
        kind: presence_change::Kind,
    ) -> anyhow::Result<()> {
        for other in others.iter_mut() {
            let p = next_presence(other).await?;
            assert_eq!(
                (p.room.as_str(), p.username.as_str(), p.kind()),
                ("lobby", who, kind)
            );
        }
        Ok(())
    }

    // Join, then leave.
    let mut carol = server.client("carol").await?;
    carol.join("lobby").await?;
    expect_all(&mut others, "carol", Joined).await?;
    {
        let (a, b) = others.split_at_mut(1);
        // carol's own next push is her message: no presence about herself.
        marker(
            &mut carol,
            "lobby",
            "carol is here",
            &mut [&mut a[0], &mut b[0]],
        )
        .await?;
    }
    carol.leave("lobby").await?;
    expect_all(&mut others, "carol", Left).await?;

    // Join, then drop the connection (no close frame).
    carol.join("lobby").await?;
    expect_all(&mut others, "carol", Joined).await?;
    drop(carol);
    expect_all(&mut others, "carol", Left).await?;

    // Join, then a clean close.
    let mut dave = server.client("dave").await?;
    dave.join("lobby").await?;
    expect_all(&mut others, "dave", Joined).await?;
    dave.close().await?;
    expect_all(&mut others, "dave", Left).await?;

    // None of it reached another room.
    marker(&mut elsewhere, "other", "quiet here", &mut []).await?;
    let (a, b) = others.split_at_mut(1);
    marker(&mut a[0], "lobby", "end", &mut [&mut b[0]]).await?;
    Ok(())
}

pub(crate) async fn typing_goes_to_others_only(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut clients = room_with(&server, "lobby", &["alice", "bob", "carol"]).await?;
    clients[0].typing("lobby", true).await?;
    clients[0].typing("lobby", false).await?;
    for other in &mut clients[1..] {
        for active in [true, false] {
            match other.next_event().await?.kind {
                Some(Kind::Typing(t)) => {
                    assert_eq!(
                        (t.room.as_str(), t.username.as_str(), t.active),
                        ("lobby", "alice", active)
                    )
                }
                other => bail!("expected a TypingNotice, got {other:?}"),
            }
        }
    }
    // Not echoed to alice: her next push is her own message.
    let (a, rest) = clients.split_at_mut(1);
    let (b, c) = rest.split_at_mut(1);
    marker(
        &mut a[0],
        "lobby",
        "done typing",
        &mut [&mut b[0], &mut c[0]],
    )
    .await?;
    Ok(())
}

pub(crate) async fn ping_echoes_client_time(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut client = server.client("alice").await?;
    for client_time in [123_456_789, 0, u64::MAX] {
        let pong = client.ping_with(client_time).await?;
        assert_eq!(pong.client_time_ms, client_time);
        ensure!(
            pong.server_time_ms.abs_diff(now_ms()) < 60_000,
            "server time {}",
            pong.server_time_ms
        );
    }
    Ok(())
}
