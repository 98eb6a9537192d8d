//! Room rules: names, max_rooms, idempotent re-join, members, NOT_IN_ROOM.

use chat_proto::v1::{client_frame, ErrorCode, Typing};
use chat_test_support::BackendKind;

use super::{assert_code, error_of, marker, next_presence, room_with, start};

pub(crate) async fn invalid_room_names_are_refused(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut client = server.client("alice").await?;
    let long = ["r".repeat(65), "\u{e9}".repeat(65), "e\u{301}".repeat(65)];
    let bad = [
        "",
        " lobby",
        "lobby ",
        "\tlobby",
        "lobby\n",
        "lobby\u{a0}",
        "\u{3000}lobby",
        "a\u{200B}b",
        "\u{200D}",
        "a\u{202E}b",
        "a\u{7}",
        "a\u{0}b",
    ];
    for room in bad.iter().copied().chain(long.iter().map(String::as_str)) {
        assert_code(client.join(room).await, ErrorCode::InvalidRoom);
    }
    // At the limits: 64 characters, however many bytes; inner spaces are fine.
    let good = [
        "r".repeat(64),
        "\u{e9}".repeat(64),
        "e\u{301}".repeat(64),
        "two words".into(),
        "#general".into(),
    ];
    for room in &good {
        client.join(room).await?;
    }
    Ok(())
}

pub(crate) async fn room_names_are_nfc_and_case_sensitive(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut a = server.client("alice").await?;
    assert_eq!(a.join("Caf\u{e9}").await?.room, "Caf\u{e9}");
    a.join("Lobby").await?;
    let mut b = server.client("bob").await?;
    // The decomposed spelling is the same room.
    let joined = b.join("Cafe\u{301}").await?;
    assert_eq!(
        (joined.room.as_str(), joined.members),
        ("Caf\u{e9}", vec!["alice".to_owned(), "bob".to_owned()])
    );
    let presence = next_presence(&mut a).await?;
    assert_eq!(
        (presence.room.as_str(), presence.username.as_str()),
        ("Caf\u{e9}", "bob")
    );
    // Case matters: "lobby" is not "Lobby".
    assert_eq!(b.join("lobby").await?.members, ["bob"]);
    marker(&mut a, "Cafe\u{301}", "same room", &mut [&mut b]).await?;
    Ok(())
}

pub(crate) async fn too_many_rooms_at_max_rooms(kind: BackendKind) -> anyhow::Result<()> {
    // (The room-operation bucket's burst is 2 x --max-rooms: out of the way.)
    let args = ["--max-rooms", "2", "--room-ops-per-second", "1000000"];
    let server = start(kind, &args).await?;
    let mut client = server.client("alice").await?;
    client.join("a").await?;
    client.join("b").await?;
    assert_code(client.join("c").await, ErrorCode::TooManyRooms);
    // A re-join is not a new room.
    client.join("a").await?;
    // Leaving makes room again.
    client.leave("b").await?;
    client.join("c").await?;
    assert_code(client.join("d").await, ErrorCode::TooManyRooms);
    assert_code(client.send("d", "x").await, ErrorCode::NotInRoom);
    Ok(())
}

pub(crate) async fn rejoin_is_idempotent_without_presence_change(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut clients = room_with(&server, "lobby", &["alice", "bob"]).await?;
    let (a, rest) = clients.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    // One message in the history, seen by both.
    marker(a, "lobby", "before", &mut [&mut *b]).await?;

    // Joined again, with the replay asked for...
    let joined = b.join_with("lobby", "", 1).await?;
    assert_eq!(joined.members, ["alice", "bob"]);
    assert_eq!(joined.history.len(), 1);
    // ...and nobody sees a presence change: the next push for both is a message.
    marker(b, "lobby", "after rejoin", &mut [&mut *a]).await?;
    // Still one membership: one delivery per message.
    marker(a, "lobby", "once", &mut [&mut *b]).await?;
    marker(a, "lobby", "twice", &mut [&mut *b]).await?;
    Ok(())
}

pub(crate) async fn joined_members_are_sorted_and_include_the_joiner(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut elsewhere = server.client("zed").await?;
    elsewhere.join("other").await?;
    let names = ["carol", "alice", "Bob", "dave"];
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut client = server.client(name).await?;
        let joined = client.join("lobby").await?;
        let mut expected: Vec<String> = names[..=i].iter().map(|n| (*n).to_owned()).collect();
        expected.sort();
        assert_eq!(joined.members, expected, "members seen by {name}");
        clients.push(client);
    }
    Ok(())
}

pub(crate) async fn leave_typing_and_fetch_outside_a_room_are_not_in_room(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut client = server.client("alice").await?;
    let typing = |room: &str| {
        client_frame::Kind::Typing(Typing {
            room: room.to_owned(),
            active: true,
        })
    };

    for round in ["never joined", "after leaving"] {
        assert_code(client.leave("lobby").await, ErrorCode::NotInRoom);
        let reply = client.request(typing("lobby")).await?;
        assert_eq!(
            error_of(&reply).map(|(code, _)| code),
            Some(ErrorCode::NotInRoom),
            "Typing, {round}"
        );
        assert_code(
            client.fetch_history("lobby", "", 0).await,
            ErrorCode::NotInRoom,
        );
        assert_code(client.send("lobby", "hi").await, ErrorCode::NotInRoom);
        client.join("lobby").await?;
        assert_eq!(client.leave("lobby").await?.room, "lobby");
    }
    // An invalid room name is simply a room not joined.
    assert_code(client.leave(" lobby").await, ErrorCode::NotInRoom);
    // The NFC spelling names the joined room.
    client.join("Cafe\u{301}").await?;
    assert_eq!(client.leave("Caf\u{e9}").await?.room, "Caf\u{e9}");
    assert_eq!(client.buffered_events().len(), 0, "no stray frames");
    Ok(())
}
