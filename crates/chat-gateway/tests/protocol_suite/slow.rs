//! Backpressure: a member that does not read is disconnected (1008) and
//! counted, and nobody else is affected.

use anyhow::{bail, ensure};
use chat_proto::v1::{presence_change, server_frame::Kind};
use chat_test_support::BackendKind;

use super::{room_with, start, FAST, WAIT};

pub(crate) async fn slow_consumer_is_disconnected_and_counted(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let args = [
        FAST,
        &["--outbound-queue", "8", "--max-text-bytes", "65536"],
    ]
    .concat();
    let server = start(kind, &args).await?;
    let mut clients = room_with(&server, "lobby", &["sender", "reader", "sleeper"]).await?;
    let mut sleeper = clients.pop().expect("sleeper");
    let mut reader = clients.pop().expect("reader");
    let mut sender = clients.pop().expect("sender");

    // The reader reads everything until "END".
    let reading = tokio::spawn(async move {
        let mut texts = 0usize;
        loop {
            match reader.next_event().await?.kind {
                Some(Kind::Message(m)) if m.text == "END" => return anyhow::Ok((texts, reader)),
                Some(Kind::Message(_)) => texts += 1,
                Some(Kind::Presence(p))
                    if p.kind() == presence_change::Kind::Left && p.username == "sleeper" => {}
                other => bail!("reader got {other:?}"),
            }
        }
    });

    // The sleeper never reads: big messages fill its socket, then its queue.
    let big = "x".repeat(32 * 1024);
    let mut sent = 0usize;
    loop {
        sender.send("lobby", &big).await?;
        sent += 1;
        // The sender's own copies: read and dropped.
        while sender.try_next_event().is_some() {}
        if sent % 10 == 0 && server.metric("chat_slow_consumers_dropped_total").await? >= Some(1.0)
        {
            break;
        }
        ensure!(
            sent < 3000,
            "no slow consumer dropped after {sent} messages of 32 KiB"
        );
    }
    sender.send("lobby", "END").await?;
    let (received, mut reader) = reading.await??;
    assert_eq!(received, sent, "the reader got every message");
    assert_eq!(
        server.metric("chat_slow_consumers_dropped_total").await?,
        Some(1.0),
        "only the sleeper was dropped"
    );

    // When the sleeper finally reads, it finds its connection closed (1008,
    // or a bare TCP close when the close frame could not be written).
    let close = sleeper.wait_closed(WAIT).await?;
    ensure!(
        close.as_ref().is_none_or(|c| c.code == 1008),
        "expected close 1008, got {close:?}"
    );
    reader.ping().await?;
    sender.ping().await?;
    Ok(())
}
