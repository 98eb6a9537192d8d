//! The formats Lua and Rust share, checked on the Lua side: the scripts run
//! in a real Redis, and what they publish and write is compared byte for
//! byte with the golden vectors that `wire.rs` and `entry.rs` check on the
//! Rust side (the `B` message payload, the presence payload, the member tag).

use std::time::Duration;

use chat_test_support::RedisServer;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use tokio::sync::broadcast;

use super::entry::{self, entry_value, instance_tag, tag_of, Holder};
use super::{scripts, wire, Keys};
use crate::PresenceKind;

const ROOM: &str = "golden";

/// A Redis, a client to run the scripts and a subscriber to the room's channel.
struct Fixture {
    redis: RedisServer,
    client: Client,
    /// Kept so that the subscription lasts the test.
    _subscriber: SubscriberClient,
    published: broadcast::Receiver<Message>,
    keys: Keys,
}

impl Fixture {
    async fn start() -> Self {
        let redis = RedisServer::start().await.unwrap();
        let config = Config::from_url(&redis.url()).unwrap();
        let client = Builder::from_config(config.clone()).build().unwrap();
        client.init().await.unwrap();
        let subscriber = Builder::from_config(config)
            .build_subscriber_client()
            .unwrap();
        subscriber.init().await.unwrap();
        let keys = Keys::new("chat");
        let published = subscriber.message_rx();
        subscriber.subscribe(keys.channel(ROOM)).await.unwrap();
        Self {
            redis,
            client,
            _subscriber: subscriber,
            published,
            keys,
        }
    }

    /// The next payload published on the room's channel, as bytes.
    async fn next_published(&mut self) -> Vec<u8> {
        let message = tokio::time::timeout(Duration::from_secs(5), self.published.recv())
            .await
            .expect("a script published in time")
            .expect("the subscriber is open");
        assert_eq!(&*message.channel, self.keys.channel(ROOM));
        match message.value {
            Value::Bytes(bytes) => bytes.to_vec(),
            Value::String(text) => text.as_bytes().to_vec(),
            other => panic!("published {other:?}"),
        }
    }

    /// The ENTER, LEAVE and REAP_ROOM scripts' KEYS.
    fn room_state_keys(&self) -> Vec<String> {
        vec![
            self.keys.members(ROOM),
            self.keys.stream(ROOM),
            self.keys.trimmed(ROOM),
            self.keys.sessions(ROOM),
        ]
    }

    /// Runs ENTER: `key` enters with `entry`, `joined` as its payload. The reply.
    async fn enter(&self, key: &str, entry: String, joined: &str) -> Vec<String> {
        let args = vec![
            key.to_owned(),
            entry,
            self.keys.channel(ROOM),
            joined.to_owned(),
        ];
        let keys = self.room_state_keys();
        self.client.eval(scripts::ENTER, keys, args).await.unwrap()
    }

    /// Runs LEAVE: the session tagged `tag` leaves `key`'s entry, `left` as
    /// the payload. The reply.
    async fn leave(&self, key: &str, tag: String, left: &str) -> i64 {
        let args = vec![
            key.to_owned(),
            tag,
            self.keys.channel(ROOM),
            left.to_owned(),
            "3600000".to_owned(),
        ];
        let keys = self.room_state_keys();
        self.client.eval(scripts::LEAVE, keys, args).await.unwrap()
    }

    /// Runs REAP_ROOM for the dead `instance`: (entries removed, remaining).
    async fn reap(&self, instance: &str) -> (u64, i64) {
        let args = vec![
            instance_tag(instance),
            self.keys.channel(ROOM),
            wire::presence_prefix(PresenceKind::Left).to_owned(),
            "3600000".to_owned(),
        ];
        let keys = self.room_state_keys();
        self.client
            .eval(scripts::REAP_ROOM, keys, args)
            .await
            .unwrap()
    }

    /// The room's member entry of `key`.
    async fn entry(&self, key: &str) -> String {
        self.client
            .hget(self.keys.members(ROOM), key)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn the_publish_script_publishes_the_golden_batch() {
    let mut fixture = Fixture::start().await;
    let stream = fixture.keys.stream(ROOM);
    fixture
        .redis
        .command(&["XADD", &stream, wire::golden::BATCH_AFTER, "m", "seed"])
        .await
        .unwrap();
    let mut keys = vec![
        stream,
        fixture.keys.trimmed(ROOM),
        fixture.keys.members(ROOM),
    ];
    let mut args: Vec<Value> = vec![
        "100".into(),
        fixture.keys.channel(ROOM).into(),
        "1".into(),
        "3600000".into(),
    ];
    for (n, (_, body)) in wire::golden::BATCH.iter().enumerate() {
        keys.push(fixture.keys.dedupe(ROOM, "ann", &n.to_string()));
        args.push("".into());
        args.push(Value::Bytes(body.to_vec().into()));
    }
    let reply: Vec<Value> = fixture
        .client
        .eval(scripts::PUBLISH, keys, args)
        .await
        .unwrap();
    let ids: Vec<String> = reply
        .chunks(2)
        .map(|pair| {
            assert_eq!(pair[0].as_u64(), Some(0), "accepted");
            pair[1].as_string().unwrap()
        })
        .collect();
    let golden_ids: Vec<&str> = wire::golden::BATCH.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, golden_ids);

    let published = fixture.next_published().await;
    assert_eq!(published, wire::golden::BATCH_PAYLOAD);
    assert_eq!(published, wire::encode_batch(wire::golden::BATCH));
}

#[tokio::test]
async fn the_presence_scripts_write_and_read_the_golden_entry() {
    let mut fixture = Fixture::start().await;
    let (instance, session, display, value) = entry::golden::ENTRY;
    let (key, left_display, left_payload) = wire::golden::LEFT;
    assert_eq!(display, left_display, "the vectors are about one member");

    // ENTER writes the member tag and display name it is given, as entry.rs builds it.
    let joined = wire::presence(PresenceKind::Joined, key, display);
    let reply: Vec<String> = fixture
        .enter(
            key,
            entry_value(&tag_of(instance, session), display),
            &joined,
        )
        .await;
    assert_eq!(reply, ["2", value]);
    assert_eq!(fixture.next_published().await, joined.as_bytes());
    let stored: String = fixture.entry(key).await;
    assert_eq!(stored, value);
    assert_eq!(
        Holder::parse(&stored).map(|h| (h.instance, h.session, h.display)),
        Some((instance, session, display))
    );

    // LEAVE compares whole tags: a session whose id extends this one's is not it.
    let other_session = format!("{session}0");
    let left: i64 = fixture
        .leave(key, tag_of(instance, &other_session), "unused")
        .await;
    assert_eq!(left, -1);

    // REAP_ROOM finds the entry by its instance tag and builds the golden
    // `Left` payload from the entry and wire.rs's prefix.
    let (removed, remaining): (u64, i64) = fixture.reap(instance).await;
    assert_eq!((removed, remaining), (1, 0));
    let published = fixture.next_published().await;
    assert_eq!(published, left_payload.as_bytes());
    assert_eq!(
        published,
        wire::presence(PresenceKind::Left, key, display).as_bytes()
    );
}

#[tokio::test]
async fn two_sessions_of_one_name_are_one_member_until_the_last_leaves() {
    let mut fixture = Fixture::start().await;
    let (key, display) = ("alice-1", "Alice");
    let (tab_a, tab_b) = (
        tag_of("gw-1~01", "gw-1~01-1"),
        tag_of("gw-2~02", "gw-2~02-9"),
    );
    let joined = wire::presence(PresenceKind::Joined, key, display);
    let left = wire::presence(PresenceKind::Left, key, display);
    for (tag, first) in [(&tab_a, "2"), (&tab_b, "1")] {
        let reply: Vec<String> = fixture.enter(key, entry_value(tag, display), &joined).await;
        assert_eq!(reply[0], first);
        assert_eq!(reply.len(), 2, "one member: {reply:?}");
    }
    assert_eq!(fixture.next_published().await, joined.as_bytes());
    // The newest session held the entry; it leaves first and the entry
    // passes to the other, silently.
    let still: i64 = fixture.leave(key, tab_b.clone(), &left).await;
    assert_eq!(still, -2);
    let entry: String = fixture.entry(key).await;
    assert_eq!(entry, entry_value(&tab_a, display));
    let gone: i64 = fixture.leave(key, tab_a.clone(), &left).await;
    assert_eq!(gone, 0);
    // Nothing was published between the Joined and this Left.
    assert_eq!(fixture.next_published().await, left.as_bytes());

    // A dead instance's session goes; the identity stays with the live one.
    for tag in [&tab_a, &tab_b] {
        let _: Vec<String> = fixture.enter(key, entry_value(tag, display), &joined).await;
    }
    assert_eq!(fixture.next_published().await, joined.as_bytes());
    let (removed, remaining): (u64, i64) = fixture.reap("gw-2~02").await;
    assert_eq!((removed, remaining), (0, 1));
    let entry: String = fixture.entry(key).await;
    assert_eq!(entry, entry_value(&tab_a, display));
    let gone: i64 = fixture.leave(key, tab_a.clone(), &left).await;
    assert_eq!(gone, 0);
    assert_eq!(fixture.next_published().await, left.as_bytes());
}
