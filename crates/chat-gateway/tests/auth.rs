//! Signed identities through the real gateway, on both backends: which
//! tokens a Hello may carry, the end of a session at its token's `exp` and
//! the return with a fresh token, several tabs of one identity as one
//! member, the `rooms` claim, RS256/ES256 keys and their rotation.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use chat_client::{Client, ClientError};
use chat_proto::v1::{presence_change, server_frame::Kind, ErrorCode, Hello, ServerFrame, Welcome};
use chat_test_support::{run_to_exit, BackendFixture, BackendKind, Gateway};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
const WAIT: Duration = Duration::from_secs(15);
const SECRET: &str = "auth-test-secret-0123456789abcdef0123456789";

/// The gateway's leeway on `exp` (crates/chat-gateway/src/auth.rs).
const LEEWAY: Duration = Duration::from_secs(5);

struct Server {
    gw: Gateway,
    _fixture: BackendFixture,
    _dir: tempfile::TempDir,
}

fn fixture_file(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// A gateway on `kind` trusting the HS256 test secret (from a file), plus `args`.
async fn start(kind: BackendKind, args: &[&str]) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("jwt-secret");
    std::fs::write(&secret, format!("{SECRET}\n"))?;
    let secret = secret.display().to_string();
    let mut all = vec!["--auth-jwt-secret-file", secret.as_str()];
    all.extend_from_slice(args);
    let fixture = kind.setup().await.context("setting up the backend")?;
    let gw = fixture
        .gateway(BIN, &all)
        .await
        .context("starting the gateway")?;
    Ok(Server {
        gw,
        _fixture: fixture,
        _dir: dir,
    })
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims(sub: &str, name: &str, ttl_secs: i64) -> Value {
    json!({"sub": sub, "name": name, "iat": now(), "exp": now() + ttl_secs})
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed_with(alg: Algorithm, private_pem: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture_file(private_pem)).unwrap();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    encode(&Header::new(alg), claims, &key).unwrap()
}

/// A new connection's Hello with `token` (and a typed name the gateway must ignore).
async fn hello(
    gw: &Gateway,
    token: &str,
) -> anyhow::Result<(Client, Result<Welcome, ClientError>)> {
    hello_resuming(gw, token, "").await
}

async fn hello_resuming(
    gw: &Gateway,
    token: &str,
    resume_token: &str,
) -> anyhow::Result<(Client, Result<Welcome, ClientError>)> {
    let mut client = gw.connect().await?;
    let welcome = client
        .hello_with(Hello {
            username: "Mallory".to_owned(),
            token: token.to_owned(),
            resume_token: resume_token.to_owned(),
            client: "auth-test".to_owned(),
        })
        .await;
    Ok((client, welcome))
}

/// Asserts a refused token: Error INVALID_TOKEN, then close 4003.
async fn assert_refused(gw: &Gateway, token: &str, why: &str) -> anyhow::Result<()> {
    let (mut client, welcome) = hello(gw, token).await?;
    match welcome {
        Err(ClientError::Server { code, message }) => ensure!(
            code == ErrorCode::InvalidToken,
            "{why}: expected INVALID_TOKEN, got {code:?} ({message})"
        ),
        other => anyhow::bail!("{why}: expected INVALID_TOKEN, got {other:?}"),
    }
    let close = client.wait_closed(WAIT).await?;
    ensure!(
        close.map(|c| c.code) == Some(4003),
        "{why}: not closed with 4003"
    );
    Ok(())
}

/// The next event, which must be a PresenceChange.
async fn next_presence(client: &mut Client) -> anyhow::Result<(presence_change::Kind, String)> {
    match client.next_event().await?.kind {
        Some(Kind::Presence(p)) => Ok((p.kind(), p.username)),
        other => anyhow::bail!("expected a PresenceChange, got {other:?}"),
    }
}

/// `sender` sends `text`; the next event of `receiver` must be it: nothing
/// (no presence change) came before it.
async fn marker(
    sender: &mut Client,
    receiver: &mut Client,
    room: &str,
    text: &str,
) -> anyhow::Result<()> {
    sender.send(room, text).await?;
    let frame: ServerFrame = receiver.next_event().await?;
    match frame.kind {
        Some(Kind::Message(m)) if m.text == text => Ok(()),
        other => anyhow::bail!("expected marker {text:?}, got {other:?}"),
    }
}

async fn tokens_are_checked_at_hello(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let gw = &server.gw;

    // Valid: the identity is the token's, not the typed name.
    let (_alice, welcome) = hello(gw, &hs256(&claims("alice-1", "Alice", 60))).await?;
    ensure!(welcome?.username == "Alice", "name claim");
    let no_name = json!({"sub": "bob", "exp": now() + 60});
    let (_bob, welcome) = hello(gw, &hs256(&no_name)).await?;
    ensure!(welcome?.username == "bob", "falls back to sub");

    assert_refused(gw, "", "no token").await?;
    assert_refused(gw, "garbage", "malformed").await?;
    assert_refused(gw, &hs256(&claims("c", "C", -60)), "expired").await?;
    let early = json!({"sub": "c", "exp": now() + 120, "nbf": now() + 60});
    assert_refused(gw, &hs256(&early), "not yet valid").await?;
    assert_refused(gw, &hs256(&json!({"sub": "c"})), "no exp").await?;
    let wrong_key = encode(
        &Header::new(Algorithm::HS256),
        &claims("c", "C", 60),
        &EncodingKey::from_secret(b"some-other-secret-0123456789abcdef0123"),
    )?;
    assert_refused(gw, &wrong_key, "wrong key").await?;
    let rs256 = signed_with(Algorithm::RS256, "rsa-private.pem", &claims("c", "C", 60));
    assert_refused(gw, &rs256, "wrong algorithm").await?;
    // alg none: the payload of a valid token under {"alg":"none"}, unsigned.
    let valid = hs256(&claims("c", "C", 60));
    let payload = valid.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    assert_refused(gw, &none, "alg none").await?;
    Ok(())
}

async fn an_expiring_token_ends_the_session_and_a_fresh_one_comes_back(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let gw = &server.gw;
    let (mut bob, welcome) = hello(gw, &hs256(&claims("bob", "Bob", 600))).await?;
    welcome?;
    bob.join("lobby").await?;
    let (mut alice, welcome) = hello(gw, &hs256(&claims("alice-1", "Alice", 1))).await?;
    let resume_token = welcome?.resume_token;
    alice.join("lobby").await?;
    ensure!(next_presence(&mut bob).await? == (presence_change::Kind::Joined, "Alice".into()));

    // At exp (plus the leeway): INVALID_TOKEN with ref 0, then 4003.
    let close = alice
        .wait_closed(Duration::from_secs(1) + LEEWAY + WAIT)
        .await?;
    ensure!(
        close.map(|c| c.code) == Some(4003),
        "closed at exp with 4003"
    );
    let error = alice.buffered_events().find_map(|f| match &f.kind {
        Some(Kind::Error(e)) => Some((e.code, f.r#ref)),
        _ => None,
    });
    ensure!(
        error == Some((ErrorCode::InvalidToken as i32, 0)),
        "got {error:?}"
    );

    // A fresh token and the resume token: back in the room, and Bob saw no change.
    let (mut again, welcome) =
        hello_resuming(gw, &hs256(&claims("alice-1", "Alice", 600)), &resume_token).await?;
    ensure!(welcome?.username == "Alice");
    let joined = again.join("lobby").await?;
    ensure!(joined.members == ["Alice", "Bob"], "{:?}", joined.members);
    // Past the time the ended session is kept for, its leaving changed nothing.
    tokio::time::sleep(chat_gateway::RECONNECT_GRACE + Duration::from_secs(1)).await;
    marker(&mut again, &mut bob, "lobby", "still here").await?;
    Ok(())
}

async fn two_tabs_of_one_identity_are_one_member(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let gw = &server.gw;
    let (mut bob, welcome) = hello(gw, &hs256(&claims("bob", "Bob", 600))).await?;
    welcome?;
    bob.join("lobby").await?;
    let token = hs256(&claims("alice-1", "Alice", 600));
    let (mut tab1, welcome) = hello(gw, &token).await?;
    welcome?;
    let (mut tab2, welcome) = hello(gw, &token).await?;
    welcome.context("a second tab of one identity is welcome")?;

    tab1.join("lobby").await?;
    ensure!(next_presence(&mut bob).await? == (presence_change::Kind::Joined, "Alice".into()));
    let joined = tab2.join("lobby").await?;
    ensure!(
        joined.members == ["Alice", "Bob"],
        "listed once: {:?}",
        joined.members
    );
    marker(&mut tab2, &mut bob, "lobby", "second tab, no Joined").await?;

    // Idempotency keys are the identity's: the other tab's retry is the same message.
    let first = tab1.send_with_id("lobby", "once", "k-1").await?;
    let retry = tab2.send_with_id("lobby", "once", "k-1").await?;
    ensure!(
        retry.id == first.id && retry.duplicate,
        "{first:?} / {retry:?}"
    );

    // The newest tab leaves first (on Redis it held the member entry).
    tab2.leave("lobby").await?;
    // Bob has "once" waiting, then must see nothing about Alice.
    drain_messages(&mut bob, 1).await?;
    marker(&mut tab1, &mut bob, "lobby", "one tab left, no Left").await?;
    tab1.leave("lobby").await?;
    ensure!(next_presence(&mut bob).await? == (presence_change::Kind::Left, "Alice".into()));
    Ok(())
}

/// Reads `n` ChatMessages (and nothing else) from `client`.
async fn drain_messages(client: &mut Client, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        match client.next_event().await?.kind {
            Some(Kind::Message(_)) => {}
            other => anyhow::bail!("expected a message, got {other:?}"),
        }
    }
    Ok(())
}

async fn the_rooms_claim_limits_joins(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut limited = claims("carol", "Carol", 600);
    limited["rooms"] = json!(["lobby", "team-*"]);
    let (mut carol, welcome) = hello(&server.gw, &hs256(&limited)).await?;
    welcome?;
    carol.join("lobby").await?;
    carol.join("team-red").await?;
    match carol.join("random").await {
        Err(ClientError::Server { code, message }) => ensure!(
            code == ErrorCode::InvalidRoom && message.contains("not allowed"),
            "{code:?}: {message}"
        ),
        other => anyhow::bail!("expected INVALID_ROOM, got {other:?}"),
    }
    match carol.join("lobby2").await {
        Err(ClientError::Server { code, .. }) => ensure!(code == ErrorCode::InvalidRoom),
        other => anyhow::bail!("expected INVALID_ROOM, got {other:?}"),
    }
    Ok(())
}

async fn public_keys_rs256_es256_and_rotation(kind: BackendKind) -> anyhow::Result<()> {
    let (rsa, rsa2, ec) = (
        fixture_file("rsa-public.pem"),
        fixture_file("rsa2-public.pem"),
        fixture_file("ec-public.pem"),
    );
    let fixture = kind.setup().await?;
    let gw = fixture
        .gateway(
            BIN,
            &[
                "--auth-jwt-public-key",
                &rsa,
                "--auth-jwt-public-key",
                &ec,
                "--auth-audience",
                "chat",
            ],
        )
        .await?;
    let mut c = claims("dave", "Dave", 600);
    c["aud"] = json!("chat");
    for (alg, key) in [
        (Algorithm::RS256, "rsa-private.pem"),
        (Algorithm::ES256, "ec-private.pem"),
    ] {
        let (_client, welcome) = hello(&gw, &signed_with(alg, key, &c)).await?;
        ensure!(welcome?.username == "Dave", "{key}");
    }
    // Not yet trusted: the next key of a rotation.
    let next = signed_with(Algorithm::RS256, "rsa2-private.pem", &c);
    assert_refused(&gw, &next, "untrusted key").await?;
    assert_refused(&gw, &hs256(&c), "HS256 without a secret").await?;
    let mut no_aud = c.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_refused(
        &gw,
        &signed_with(Algorithm::RS256, "rsa-private.pem", &no_aud),
        "no aud",
    )
    .await?;
    drop(gw);
    // During the rotation both keys are trusted.
    let gw = fixture
        .gateway(BIN, &["--auth-jwt-public-key", &format!("{rsa},{rsa2}")])
        .await?;
    let (_client, welcome) = hello(&gw, &next).await?;
    welcome.context("the next key is trusted")?;
    Ok(())
}

async fn unusable_key_files_exit_64(kind: BackendKind) -> anyhow::Result<()> {
    let fixture = kind.setup().await?;
    let backend_args = fixture.backend().args();
    let dir = tempfile::tempdir()?;
    let short = dir.path().join("short");
    std::fs::write(&short, "short")?;
    let short = short.display().to_string();
    for (flag, value) in [
        ("--auth-jwt-secret-file", "/nonexistent/secret"),
        ("--auth-jwt-secret-file", short.as_str()),
        ("--auth-jwt-public-key", short.as_str()),
        ("--auth-jwks-file", short.as_str()),
    ] {
        let mut args = vec!["--listen", "127.0.0.1:0", flag, value];
        args.extend(backend_args.iter().map(String::as_str));
        let output = run_to_exit(BIN, &args, Duration::from_secs(20)).await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(output.status.code() == Some(64), "{flag} {value}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        ensure!(
            lines.len() == 1 && lines[0].contains(flag),
            "{flag}: {stderr:?}"
        );
        ensure!(!stderr.contains(SECRET));
    }
    Ok(())
}

/// Redis only (memory gateways share nothing): tabs of one identity on two
/// gateways; the one holding the room's entry dies. Its other users leave
/// (reaped), the identity stays with its live tab, and leaves with it.
#[tokio::test]
async fn a_dead_gateways_tab_leaves_the_identity_with_its_live_tab() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("jwt-secret");
    std::fs::write(&secret, SECRET)?;
    let secret = secret.display().to_string();
    let mut cluster = chat_test_support::Cluster::start(
        BIN,
        3,
        BackendKind::Redis,
        &["--auth-jwt-secret-file", &secret],
    )
    .await?;
    let (mut bob, welcome) = hello(cluster.gateway(0), &hs256(&claims("bob", "Bob", 600))).await?;
    welcome?;
    bob.join("lobby").await?;
    let alice = hs256(&claims("alice-1", "Alice", 600));
    let (mut tab1, welcome) = hello(cluster.gateway(1), &alice).await?;
    welcome?;
    tab1.join("lobby").await?;
    ensure!(next_presence(&mut bob).await? == (presence_change::Kind::Joined, "Alice".into()));
    let (mut carl, welcome) =
        hello(cluster.gateway(2), &hs256(&claims("carl", "Carl", 600))).await?;
    welcome?;
    carl.join("lobby").await?;
    ensure!(next_presence(&mut bob).await? == (presence_change::Kind::Joined, "Carl".into()));
    // The newest tab, on the gateway about to die, holds Alice's entry.
    let (mut tab2, welcome) = hello(cluster.gateway(2), &alice).await?;
    welcome?;
    tab2.join("lobby").await?;
    marker(&mut tab1, &mut bob, "lobby", "two tabs").await?;

    cluster.gateway_mut(2).sigkill().await?;
    bob.set_timeout(WAIT);
    ensure!(
        next_presence(&mut bob).await? == (presence_change::Kind::Left, "Carl".into()),
        "the dead gateway's other user is reaped"
    );
    // Reaped in the same step: Alice stayed, silently.
    marker(&mut tab1, &mut bob, "lobby", "alice still here").await?;
    let (mut dan, welcome) = hello(cluster.gateway(0), &hs256(&claims("dan", "Dan", 600))).await?;
    welcome?;
    let joined = dan.join("lobby").await?;
    ensure!(
        joined.members == ["Alice", "Bob", "Dan"],
        "{:?}",
        joined.members
    );
    ensure!(next_presence(&mut bob).await? == (presence_change::Kind::Joined, "Dan".into()));
    tab1.leave("lobby").await?;
    ensure!(next_presence(&mut bob).await? == (presence_change::Kind::Left, "Alice".into()));
    drop(carl);
    Ok(())
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(chat_test_support::BackendKind::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(chat_test_support::BackendKind::Redis).await
                }
            )*
        }
    };
}

on_both_backends!(
    tokens_are_checked_at_hello,
    an_expiring_token_ends_the_session_and_a_fresh_one_comes_back,
    two_tabs_of_one_identity_are_one_member,
    the_rooms_claim_limits_joins,
    public_keys_rs256_es256_and_rotation,
    unusable_key_files_exit_64,
);
