//! Resume tokens (`Welcome.resume_token`, `Hello.resume_token`): the next
//! session of a client takes its name and presence over at once, silently,
//! and the earlier session is closed with 4002; any other token is ignored.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use chat_bridge::RESUME_WINDOW;
use chat_client::Client;
use chat_proto::v1::{presence_change, ErrorCode, Hello, Welcome};
use chat_test_support::{BackendKind, Gateway};
use tokio::time::Instant;

use super::{assert_code, error_of, marker, next_presence, start, WAIT};

/// A new connection's Hello for `name` with `token`.
pub(crate) async fn hello_with_token(
    gw: &Gateway,
    name: &str,
    token: &str,
) -> anyhow::Result<(Client, Result<Welcome, chat_client::ClientError>)> {
    let mut client = gw.connect().await?;
    let welcome = client
        .hello_with(Hello {
            username: name.to_owned(),
            resume_token: token.to_owned(),
            client: "resume-test".to_owned(),
            ..Default::default()
        })
        .await;
    Ok((client, welcome))
}

/// The earlier session of a resumed client: Error SESSION_REPLACED (ref 0),
/// then close 4002.
pub(crate) async fn assert_replaced(earlier: &mut Client) -> anyhow::Result<()> {
    let close = earlier.wait_closed(WAIT).await?;
    ensure!(
        close.as_ref().map(|c| c.code) == Some(4002),
        "closed with {close:?}"
    );
    let error = earlier.buffered_events().find_map(error_of);
    ensure!(
        error == Some((ErrorCode::SessionReplaced, 0)),
        "expected SESSION_REPLACED with ref 0, got {error:?}"
    );
    Ok(())
}

pub(crate) async fn a_token_takes_a_live_session_over_without_presence_flicker(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut observer = server.client("Obs").await?;
    observer.join("a").await?;
    observer.join("b").await?;
    let mut ann = server.connect().await?;
    let first = ann.hello("Ann").await?;
    ensure!(
        first.resume_token.len() >= 32 && first.resume_token.is_ascii(),
        "a token of at least 128 bits as printable ASCII: {:?}",
        first.resume_token
    );
    ann.join("a").await?;
    ann.join("b").await?;
    for _ in 0..2 {
        let joined = next_presence(&mut observer).await?;
        ensure!(joined.kind() == presence_change::Kind::Joined, "{joined:?}");
    }

    let (mut again, welcome) = hello_with_token(&server, "ann", &first.resume_token).await?;
    let welcome = welcome.context("the token takes the name over")?;
    let resumed_at = Instant::now();
    ensure!(welcome.username == "ann");
    ensure!(
        !welcome.resume_token.is_empty() && welcome.resume_token != first.resume_token,
        "every session gets a new token"
    );
    assert_replaced(&mut ann).await?;

    // Joined again in time: nobody saw Ann go or come back.
    let joined = again.join("a").await?;
    ensure!(joined.members == ["Obs", "ann"], "{:?}", joined.members);
    marker(&mut again, "a", "back", &mut [&mut observer]).await?;

    // Not joined again: shown leaving, once the window has passed.
    observer.set_timeout(RESUME_WINDOW + WAIT);
    let left = next_presence(&mut observer).await?;
    ensure!(
        (left.room.as_str(), left.username.as_str(), left.kind())
            == ("b", "ann", presence_change::Kind::Left),
        "{left:?}"
    );
    ensure!(
        resumed_at.elapsed() >= RESUME_WINDOW - Duration::from_millis(500),
        "LEFT came {:?} after the Welcome, before the window ended",
        resumed_at.elapsed()
    );
    observer.set_timeout(WAIT);
    marker(&mut again, "a", "still here", &mut [&mut observer]).await?;
    Ok(())
}

pub(crate) async fn a_dropped_connection_keeps_its_place_for_its_token_for_a_while(
    kind: BackendKind,
) -> anyhow::Result<()> {
    use chat_gateway::RECONNECT_GRACE;
    let server = start(kind, &[]).await?;
    let mut observer = server.client("Obs").await?;
    observer.join("a").await?;
    let mut ann = server.connect().await?;
    let token = ann.hello("Ann").await?.resume_token;
    ann.join("a").await?;
    next_presence(&mut observer).await?;

    // Dropped (no close frame), back at once with the token: nobody noticed.
    drop(ann);
    let (mut again, welcome) = hello_with_token(&server, "Ann", &token).await?;
    welcome.context("the token takes the name back")?;
    ensure!(again.join("a").await?.members == ["Ann", "Obs"]);
    marker(&mut again, "a", "back", &mut [&mut observer]).await?;

    // A normal close (1000) is a goodbye: shown leaving at once.
    let closed = Instant::now();
    again.close().await?;
    let left = next_presence(&mut observer).await?;
    ensure!(left.username == "Ann" && left.kind() == presence_change::Kind::Left);
    ensure!(
        closed.elapsed() < RECONNECT_GRACE,
        "LEFT {:?} after a normal close",
        closed.elapsed()
    );

    // Dropped and not back: shown leaving once the grace has passed.
    let mut bob = server.client("Bob").await?;
    bob.join("a").await?;
    next_presence(&mut observer).await?;
    drop(bob);
    let dropped = Instant::now();
    let left = next_presence(&mut observer).await?;
    ensure!(left.username == "Bob" && left.kind() == presence_change::Kind::Left);
    ensure!(
        dropped.elapsed() >= RECONNECT_GRACE - Duration::from_millis(200),
        "LEFT {:?} after the drop, before the grace ended",
        dropped.elapsed()
    );
    Ok(())
}

pub(crate) async fn wrong_spent_and_foreign_tokens_are_ignored(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut ann = server.connect().await?;
    let ann_token = ann.hello("Ann").await?.resume_token;
    let mut bob = server.connect().await?;
    let bob_token = bob.hello("Bob").await?.resume_token;

    let mut wrong = ann_token.clone();
    wrong.replace_range(..1, if wrong.starts_with('0') { "1" } else { "0" });
    for token in ["", "not a token", &wrong, &bob_token] {
        let (_client, welcome) = hello_with_token(&server, "ann", token).await?;
        assert_code(welcome, ErrorCode::UsernameTaken);
    }
    // Ann's token is not a key to Bob's name either.
    let (_client, welcome) = hello_with_token(&server, "Bob", &ann_token).await?;
    assert_code(welcome, ErrorCode::UsernameTaken);

    // Good once; then spent.
    let (_again, welcome) = hello_with_token(&server, "ANN", &ann_token).await?;
    let next_token = welcome.context("the right token")?.resume_token;
    assert_replaced(&mut ann).await?;
    let (_late, welcome) = hello_with_token(&server, "Ann", &ann_token).await?;
    assert_code(welcome, ErrorCode::UsernameTaken);

    // No token reaches the log, not even at debug level.
    let log = server.log_contents();
    ensure!(log.contains("welcomed"), "the log is being written");
    for token in [&ann_token, &bob_token, &next_token] {
        ensure!(!log.contains(token.as_str()), "a resume token was logged");
    }
    drop(bob);
    Ok(())
}
