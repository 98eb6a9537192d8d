//! The protocol suite: one async function per rule of `proto/chat/v1/chat.proto`,
//! each taking the backend to run on, instantiated as `#[tokio::test]`s for
//! every backend by [`instantiate!`] (see `protocol_memory.rs`, `protocol_redis.rs`).
//!
//! Every case starts its own gateway (and, for Redis, its own redis-server)
//! on free ports and speaks the protocol through `chat-client`.

#![allow(
    dead_code,
    reason = "each instantiating test binary uses every case, but not every helper"
)]

pub(crate) mod delivery;
pub(crate) mod drain;
pub(crate) mod frames;
pub(crate) mod hello;
pub(crate) mod history;
pub(crate) mod hostile;
pub(crate) mod http;
pub(crate) mod keepalive;
pub(crate) mod resume;
pub(crate) mod rooms;
pub(crate) mod send;
pub(crate) mod slow;

use std::fmt::Debug;
use std::ops::Deref;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _};
use chat_client::{Client, ClientError};
use chat_proto::v1::{
    presence_change, server_frame::Kind, ChatMessage, ErrorCode, PresenceChange, ServerFrame,
};
use chat_proto::MessageId;
use chat_test_support::{BackendFixture, BackendKind, Gateway};
use tokio::time::Instant;

/// The gateway binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");

/// Bound on waits for something that should happen promptly.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Flags that take the per-connection rate limit out of the way.
pub(crate) const FAST: &[&str] = chat_test_support::FAST_SENDS;

/// Instantiates every case of the suite as a `#[tokio::test]` for one backend:
/// `protocol_suite::instantiate!(chat_test_support::BackendKind::Memory);`.
/// A case missing here is reported as dead code by the compiler.
macro_rules! instantiate {
    ($kind:expr) => {
        $crate::protocol_suite::instantiate!(@cases $kind;
            hello::first_frame_must_be_hello,
            hello::username_is_trimmed_and_normalised,
            hello::invalid_usernames_are_refused_and_hello_may_be_retried,
            hello::usernames_are_unique_after_nfc_and_lowercasing,
            hello::hello_after_welcome_is_bad_frame,
            hello::name_is_free_again_soon_after_close,
            hello::welcome_reports_the_configured_limits,
            rooms::invalid_room_names_are_refused,
            rooms::room_names_are_nfc_and_case_sensitive,
            rooms::too_many_rooms_at_max_rooms,
            rooms::rejoin_is_idempotent_without_presence_change,
            rooms::joined_members_are_sorted_and_include_the_joiner,
            rooms::leave_typing_and_fetch_outside_a_room_are_not_in_room,
            history::join_replays_recent_history_with_limits,
            history::since_id_replay_is_gapless_while_others_publish,
            history::since_id_older_than_retained_is_truncated,
            history::malformed_ids_are_invalid_argument,
            history::fetch_history_pages_backwards,
            send::send_rules_apply_in_order,
            send::duplicate_send_is_acked_with_the_original_and_not_redelivered,
            send::rate_limit_is_a_token_bucket_per_connection,
            send::pipelined_sends_keep_their_order_and_replies_follow_requests,
            send::pipelined_retries_are_one_message,
            delivery::message_reaches_every_member_exactly_as_sent,
            delivery::all_members_see_one_order_with_increasing_ids,
            delivery::presence_goes_to_others_never_to_the_subject,
            delivery::typing_goes_to_others_only,
            delivery::ping_echoes_client_time,
            frames::undecodable_and_kindless_frames_are_bad_frame,
            frames::text_message_is_closed_1003,
            frames::oversized_message_is_closed_1009,
            keepalive::server_pings_and_closes_silent_connections,
            slow::slow_consumer_is_disconnected_and_counted,
            http::healthz_is_ok,
            http::metrics_lists_the_counters,
            http::api_rooms_lists_rooms_with_members,
            http::zero_valued_flags_are_refused_with_exit_64,
            drain::sigterm_drains_reconnect_503_close_1001_exit_0,
            resume::a_token_takes_a_live_session_over_without_presence_flicker,
            resume::wrong_spent_and_foreign_tokens_are_ignored,
            resume::a_dropped_connection_keeps_its_place_for_its_token_for_a_while,
            hostile::a_connection_without_hello_is_closed_at_the_deadline,
            hostile::refused_hellos_are_capped,
            hostile::a_join_leave_flood_is_limited_and_coalesced_for_the_others,
        );
    };
    (@cases $kind:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() -> anyhow::Result<()> {
                $crate::protocol_suite::$module::$case($kind).await
            }
        )*
    };
}
pub(crate) use instantiate;

/// A gateway with the backend it runs on (dropped after it).
pub(crate) struct Server {
    pub(crate) gw: Gateway,
    pub(crate) fixture: BackendFixture,
}

impl Deref for Server {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.gw
    }
}

/// Sets up `kind` and starts a gateway on it with `args`.
pub(crate) async fn start(kind: BackendKind, args: &[&str]) -> anyhow::Result<Server> {
    let fixture = kind.setup().await.context("setting up the backend")?;
    let gw = fixture
        .gateway(BIN, args)
        .await
        .context("starting the gateway")?;
    Ok(Server { gw, fixture })
}

/// Clients `names`, each said Hello and joined `room`, in order. The
/// PresenceChange(JOINED) every member got for the later joiners is checked
/// and consumed, so every client starts with no pending event.
pub(crate) async fn room_with(
    gw: &Gateway,
    room: &str,
    names: &[&str],
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(names.len());
    for name in names {
        let mut client = gw
            .client(name)
            .await
            .with_context(|| format!("hello {name}"))?;
        client
            .join(room)
            .await
            .with_context(|| format!("{name} joins {room}"))?;
        clients.push(client);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        for later in &names[i + 1..] {
            let presence = next_presence(client).await?;
            ensure!(
                presence.username == later.trim()
                    && presence.kind() == presence_change::Kind::Joined,
                "{} expected JOINED {later}, got {presence:?}",
                names[i]
            );
        }
    }
    Ok(clients)
}

/// The code of a failed request; fails the test when it succeeded or failed otherwise.
#[track_caller]
pub(crate) fn code_of<T: Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected an Error frame, got {other:?}"),
    }
}

/// Asserts that a request was answered with an Error of `code`.
#[track_caller]
pub(crate) fn assert_code<T: Debug>(result: Result<T, ClientError>, code: ErrorCode) {
    match result {
        Err(ClientError::Server { code: got, message }) => {
            assert_eq!(
                got,
                code,
                "expected {}, got {} ({message})",
                code.as_str_name(),
                got.as_str_name()
            )
        }
        other => panic!("expected Error {}, got {other:?}", code.as_str_name()),
    }
}

/// The code and ref of an Error frame.
pub(crate) fn error_of(frame: &ServerFrame) -> Option<(ErrorCode, u64)> {
    match &frame.kind {
        Some(Kind::Error(e)) => Some((
            ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
            frame.r#ref,
        )),
        _ => None,
    }
}

/// The next event, which must be a ChatMessage.
pub(crate) async fn next_message(client: &mut Client) -> anyhow::Result<ChatMessage> {
    match client.next_event().await?.kind {
        Some(Kind::Message(message)) => Ok(message),
        other => bail!("expected a ChatMessage, got {other:?}"),
    }
}

/// The next event, which must be a PresenceChange.
pub(crate) async fn next_presence(client: &mut Client) -> anyhow::Result<PresenceChange> {
    match client.next_event().await?.kind {
        Some(Kind::Presence(presence)) => Ok(presence),
        other => bail!("expected a PresenceChange, got {other:?}"),
    }
}

/// Reads events until `n` ChatMessages have arrived; any other event fails.
pub(crate) async fn messages(client: &mut Client, n: usize) -> anyhow::Result<Vec<ChatMessage>> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(
            next_message(client)
                .await
                .with_context(|| format!("after {} of {n} messages", got.len()))?,
        );
    }
    Ok(got)
}

/// `sender` sends `text` to `room`; then the next event of `sender` and of
/// every client in `others` must be exactly that message. This is how a case
/// shows that nothing else (no presence, no duplicate) was pushed before it:
/// pushes of one room reach each member in one order.
pub(crate) async fn marker(
    sender: &mut Client,
    room: &str,
    text: &str,
    others: &mut [&mut Client],
) -> anyhow::Result<()> {
    let ack = sender
        .send(room, text)
        .await
        .with_context(|| format!("sending marker {text:?}"))?;
    for receiver in std::iter::once(sender).chain(others.iter_mut().map(|c| &mut **c)) {
        let message = next_message(receiver)
            .await
            .with_context(|| format!("waiting for marker {text:?}"))?;
        ensure!(
            message.id == ack.id && message.text == text,
            "expected marker {text:?}, got {message:?}"
        );
    }
    Ok(())
}

/// Parses a message id, failing the test on a malformed one.
pub(crate) fn id(s: &str) -> anyhow::Result<MessageId> {
    s.parse::<MessageId>().map_err(|e| anyhow!("{e}"))
}

/// The ids of messages, as strings.
pub(crate) fn ids(messages: &[ChatMessage]) -> Vec<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

/// Sends `n` messages `"{prefix}{i}"` pipelined (all frames first, then the
/// Acks); returns the Ack ids in sending order.
pub(crate) async fn publish(
    client: &mut Client,
    room: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    use chat_proto::v1::{client_frame, Send};
    let mut refs = Vec::with_capacity(n);
    for i in 0..n {
        let send = Send {
            room: room.to_owned(),
            text: format!("{prefix}{i}"),
            client_msg_id: String::new(),
        };
        refs.push(client.start(client_frame::Kind::Send(send)).await?);
    }
    let mut acks = Vec::with_capacity(n);
    for r in refs {
        match client.wait_reply(r).await?.kind {
            Some(Kind::Ack(ack)) => acks.push(ack.id),
            other => bail!("expected an Ack, got {other:?}"),
        }
    }
    Ok(acks)
}

/// Claims `name` on `client`, retrying while it is taken; fails after `limit`.
pub(crate) async fn claim_within(
    client: &mut Client,
    name: &str,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<()> {
    loop {
        match client.hello(name).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Server {
                code: ErrorCode::UsernameTaken,
                ..
            }) => {
                if since.elapsed() > limit {
                    bail!(
                        "{name:?} still taken {:?} after its connection closed",
                        since.elapsed()
                    );
                }
                // Polling a condition the server decides on its own.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
