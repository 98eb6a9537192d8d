//! History rules: replay on Join (recent or since_id), truncation, FetchHistory paging.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Context as _};
use chat_proto::v1::{server_frame::Kind, ChatMessage, ErrorCode};
use chat_proto::MessageId;
use chat_test_support::BackendKind;

use super::{assert_code, id, ids, messages, next_message, publish, room_with, start, FAST};

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    [FAST, extra].concat()
}

pub(crate) async fn join_replays_recent_history_with_limits(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &args(&["--history-len", "300"])).await?;
    let mut alice = server.client("alice").await?;
    alice.join("lobby").await?;
    let sent = publish(&mut alice, "lobby", "m", 250).await?;

    let mut bob = server.client("bob").await?;
    // The first is a join, the others re-joins: each answers with the replay asked for.
    for (limit, served) in [
        (0, 50),
        (10, 10),
        (1, 1),
        (200, 200),
        (201, 200),
        (500, 200),
        (u32::MAX, 200),
    ] {
        let joined = bob.join_with("lobby", "", limit).await?;
        assert_eq!(
            ids(&joined.history),
            sent[250 - served..],
            "history_limit {limit}: the newest {served}, oldest first"
        );
        assert!(!joined.history_truncated);
        let texts: Vec<&str> = joined.history.iter().map(|m| m.text.as_str()).collect();
        let expected: Vec<String> = (250 - served..250).map(|i| format!("m{i}")).collect();
        assert_eq!(texts, expected);
    }
    Ok(())
}

/// Appends `replayed` to `seen`, checking that every id is after the last one.
fn extend_in_order(
    seen: &mut Vec<ChatMessage>,
    replayed: Vec<ChatMessage>,
    what: &str,
) -> anyhow::Result<()> {
    for message in replayed {
        if let Some(last) = seen.last() {
            ensure!(
                id(&message.id)? > id(&last.id)?,
                "{what}: {} after {} (duplicate or out of order)",
                message.id,
                last.id
            );
        }
        seen.push(message);
    }
    Ok(())
}

pub(crate) async fn since_id_replay_is_gapless_while_others_publish(
    kind: BackendKind,
) -> anyhow::Result<()> {
    const PUBLISHERS: usize = 3;
    const CYCLES: usize = 200;
    // Publishers stop when the resumer is done; the cap is only a safety
    // bound, and the history is long enough that nothing is ever trimmed.
    const CAP: usize = 30_000;
    // 200 resumes in a row: the room-operation bucket out of the way.
    let flags = ["--history-len", "100000", "--room-ops-per-second", "100000"];
    let server = start(kind, &args(&flags)).await?;
    let mut names: Vec<String> = (0..PUBLISHERS).map(|i| format!("publisher{i}")).collect();
    names.push("observer".into());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut clients = room_with(&server, "lobby", &names).await?;
    let mut observer = clients.pop().expect("observer");

    // Publishers send pipelined batches until told to stop: the more
    // messages land while the resumer joins, the more the seam is exercised.
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishing = Vec::new();
    for (i, mut publisher) in clients.into_iter().enumerate() {
        let stop = stop.clone();
        publishing.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            while !stop.load(Ordering::Relaxed) && acked.len() < CAP {
                acked.extend(
                    publish(
                        &mut publisher,
                        "lobby",
                        &format!("p{i}-{}-", acked.len()),
                        20,
                    )
                    .await?,
                );
                // Own and others' copies are not needed here.
                while publisher.try_next_event().is_some() {}
            }
            anyhow::Ok((acked, publisher))
        }));
    }
    // The observer stays in the room and sees everything live, up to "END".
    let observing = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            if let Some(Kind::Message(m)) = observer.next_event().await?.kind {
                let end = m.text == "END";
                seen.push(m.id);
                if end {
                    return anyhow::Ok(seen);
                }
            }
        }
    });

    // The resumer joins, reads a little, leaves, and resumes from its last id.
    let mut resumer = server.client("resumer").await?;
    let mut seen: Vec<ChatMessage> = Vec::new();
    for cycle in 0..CYCLES {
        let since = seen
            .last()
            .map_or_else(|| "0-0".to_owned(), |m| m.id.clone());
        let joined = resumer.join_with("lobby", &since, 0).await?;
        ensure!(
            !joined.history_truncated,
            "cycle {cycle}: nothing was trimmed"
        );
        extend_in_order(&mut seen, joined.history, &format!("cycle {cycle} replay"))?;
        let live = messages(&mut resumer, 2)
            .await
            .with_context(|| format!("cycle {cycle} live"))?;
        extend_in_order(&mut seen, live, &format!("cycle {cycle} live"))?;
        resumer.leave("lobby").await?;
        // Whatever was pushed before the Left.
        let mut before_left = Vec::new();
        while let Some(frame) = resumer.try_next_event() {
            match frame.kind {
                Some(Kind::Message(m)) => before_left.push(m),
                other => anyhow::bail!("cycle {cycle}: unexpected {other:?}"),
            }
        }
        extend_in_order(
            &mut seen,
            before_left,
            &format!("cycle {cycle} before Left"),
        )?;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut last_publisher = None;
    for task in publishing {
        let (ids, publisher) = task.await??;
        acked.extend(ids);
        last_publisher = Some(publisher);
    }
    let end = last_publisher
        .context("publishers")?
        .send("lobby", "END")
        .await?;
    acked.push(end.id);

    // A last resume catches up to the end.
    let since = seen
        .last()
        .map(|m| m.id.clone())
        .context("the resumer saw messages")?;
    let joined = resumer.join_with("lobby", &since, 0).await?;
    extend_in_order(&mut seen, joined.history, "final replay")?;
    while seen.last().is_none_or(|m| m.text != "END") {
        let message = next_message(&mut resumer).await?;
        extend_in_order(&mut seen, vec![message], "final live")?;
    }
    let observed = observing.await??;
    acked.sort_by_key(|a| id(a).expect("acked ids are well-formed"));
    assert_eq!(
        observed, acked,
        "the observer saw every acked message, in id order"
    );
    assert_eq!(
        ids(&seen),
        observed,
        "resuming with since_id is gapless and duplicate-free"
    );
    Ok(())
}

pub(crate) async fn since_id_older_than_retained_is_truncated(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &args(&["--history-len", "5"])).await?;
    let mut alice = server.client("alice").await?;
    alice.join("lobby").await?;
    let m = publish(&mut alice, "lobby", "m", 10).await?;
    messages(&mut alice, 10).await?;
    let retained = &m[5..];

    let mut bob = server.client("bob").await?;
    let newest = id(&m[9])?;
    let after_newest = MessageId::new(newest.ms + 1_000_000, 0).to_string();
    let cases: [(&str, &[String], bool); 7] = [
        ("0-0", retained, true),
        (&m[0], retained, true),
        (&m[3], retained, true),
        // Everything after m[4] is still retained.
        (&m[4], retained, false),
        (&m[6], &m[7..], false),
        (&after_newest, &[], false),
        (&m[9], &[], false),
    ];
    for (since, expected, truncated) in cases {
        let joined = bob.join_with("lobby", since, 0).await?;
        assert_eq!(ids(&joined.history), expected, "since_id {since}");
        assert_eq!(
            joined.history_truncated, truncated,
            "history_truncated for since_id {since}"
        );
    }
    // Live delivery continues after the last replay (since the newest id), without repeats.
    let ack = alice.send("lobby", "live").await?;
    assert_eq!(next_message(&mut bob).await?.id, ack.id);
    Ok(())
}

pub(crate) async fn malformed_ids_are_invalid_argument(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut client = server.client("alice").await?;
    let malformed = [
        "abc",
        "1",
        "1-",
        "-1",
        "1-2-3",
        "+1-2",
        " 1-2",
        "1-x",
        "1.5-0",
        "99999999999999999999-0",
    ];
    for since in malformed {
        assert_code(
            client.join_with("lobby", since, 0).await,
            ErrorCode::InvalidArgument,
        );
    }
    // The refused Join did not join.
    assert_code(client.send("lobby", "hi").await, ErrorCode::NotInRoom);
    client.join("lobby").await?;
    for before in malformed {
        assert_code(
            client.fetch_history("lobby", before, 0).await,
            ErrorCode::InvalidArgument,
        );
    }
    Ok(())
}

pub(crate) async fn fetch_history_pages_backwards(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &args(&["--history-len", "500"])).await?;
    let mut alice = server.client("alice").await?;
    alice.join("lobby").await?;
    let m = publish(&mut alice, "lobby", "m", 250).await?;

    // Pages of 100 from the newest back to the oldest, each oldest first.
    let page = alice.fetch_history("lobby", "", 100).await?;
    assert_eq!(
        (page.room.as_str(), ids(&page.messages), page.has_more),
        ("lobby", m[150..].to_vec(), true)
    );
    let page = alice.fetch_history("lobby", &m[150], 100).await?;
    assert_eq!(
        (ids(&page.messages), page.has_more),
        (m[50..150].to_vec(), true)
    );
    let page = alice.fetch_history("lobby", &m[50], 100).await?;
    assert_eq!(
        (ids(&page.messages), page.has_more),
        (m[..50].to_vec(), false)
    );
    let page = alice.fetch_history("lobby", &m[0], 100).await?;
    assert_eq!((page.messages.len(), page.has_more), (0, false));

    // Default and maximum page sizes.
    let page = alice.fetch_history("lobby", "", 0).await?;
    assert_eq!(
        (ids(&page.messages), page.has_more),
        (m[200..].to_vec(), true),
        "limit 0 is 50"
    );
    let page = alice.fetch_history("lobby", "", 1000).await?;
    assert_eq!(
        (ids(&page.messages), page.has_more),
        (m[50..].to_vec(), true),
        "limit > 200 is 200"
    );
    // before_id need not be an existing id: strictly older ones are returned.
    let just_after_m9 = id(&m[9])?.next().to_string();
    let page = alice.fetch_history("lobby", &just_after_m9, 3).await?;
    assert_eq!(ids(&page.messages), m[7..10].to_vec());
    assert_eq!(page.messages[2].text, "m9");
    Ok(())
}
