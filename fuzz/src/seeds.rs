//! Seed inputs: one of each kind of frame and the typical conversations, so
//! that the fuzzers start past Hello. `cargo run --example write_seeds`
//! writes them to `seeds/`; `tests/replay.rs` checks the files are current.

use chat_proto::v1::{
    client_frame::Kind, ClientFrame, FetchHistory, Hello, Join, Leave, Ping, Send, Typing,
};
use chat_proto::Message as _;

use crate::session::{encode, Op};

fn bytes(r: u64, kind: Kind) -> Vec<u8> {
    ClientFrame {
        r#ref: r,
        kind: Some(kind),
    }
    .encode_to_vec()
}

fn hello(name: &str) -> Kind {
    Kind::Hello(Hello {
        username: name.into(),
        client: "seed".into(),
        ..Hello::default()
    })
}

fn join(room: &str, since_id: &str, history_limit: u32) -> Kind {
    Kind::Join(Join {
        room: room.into(),
        since_id: since_id.into(),
        history_limit,
    })
}

fn send(room: &str, text: &str, client_msg_id: &str) -> Kind {
    Kind::Send(Send {
        room: room.into(),
        text: text.into(),
        client_msg_id: client_msg_id.into(),
    })
}

fn leave(room: &str) -> Kind {
    Kind::Leave(Leave { room: room.into() })
}

fn typing(room: &str, active: bool) -> Kind {
    Kind::Typing(Typing {
        room: room.into(),
        active,
    })
}

fn fetch(room: &str, before_id: &str, limit: u32) -> Kind {
    Kind::FetchHistory(FetchHistory {
        room: room.into(),
        before_id: before_id.into(),
        limit,
    })
}

fn ping(t: u64) -> Kind {
    Kind::Ping(Ping { client_time_ms: t })
}

/// Seeds of the `frame_decoder` target, by file name.
pub fn frame_decoder() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("hello", bytes(1, hello("Alice"))),
        ("hello-nfd", bytes(2, hello("  Jose\u{301} \u{3000}"))),
        ("hello-blank", bytes(3, hello("\u{3164}\u{2800}"))),
        (
            "hello-resume",
            bytes(
                4,
                Kind::Hello(Hello {
                    username: "bob".into(),
                    token: "t".into(),
                    client: "web/1.0".into(),
                    resume_token: "AAAAAAAAAAAAAAAAAAAAAA".into(),
                }),
            ),
        ),
        ("join", bytes(5, join("lobby", "", 0))),
        (
            "join-since",
            bytes(6, join("Cafe\u{301}", "1732712345678-7", 500)),
        ),
        (
            "join-max-id",
            bytes(7, join("r", "18446744073709551615-18446744073709551615", 1)),
        ),
        ("send", bytes(8, send("lobby", "hello there", "c-1"))),
        (
            "send-rtl",
            bytes(9, send("a\u{202E}b", " \u{3000} ", &"k".repeat(65))),
        ),
        ("leave", bytes(10, leave("lobby"))),
        ("typing", bytes(11, typing("lobby", true))),
        ("ping", bytes(u64::MAX, ping(1_732_712_345_678))),
        ("fetch", bytes(12, fetch("lobby", "99-3", 201))),
        ("fetch-bad-id", bytes(13, fetch("lobby", "+1-2", 0))),
        (
            "no-kind",
            ClientFrame {
                r#ref: 14,
                kind: None,
            }
            .encode_to_vec(),
        ),
        ("text-id", b"01-0002".to_vec()),
        (
            "text-name",
            "\u{1F600} L\u{130}ON \u{3A3}".as_bytes().to_vec(),
        ),
    ]
}

/// Seeds of the `session` target, by file name.
pub fn session() -> Vec<(&'static str, Vec<u8>)> {
    let mut inputs = vec![("close-while-receiving", close_while_receiving())];
    inputs.extend(conversations());
    inputs.extend(edge_cases());
    inputs.push(("flood", flood()));
    inputs.push(("too-many-rooms", too_many_rooms()));
    inputs.extend(history());
    inputs
        .into_iter()
        .map(|(name, ops)| (name, encode(&ops)))
        .collect()
}

/// Client A and client B of a `session` input.
const A: usize = 0;
const B: usize = 1;

/// A binary message carrying the client frame `kind` with ref `r`.
fn bin(r: u64, kind: Kind) -> Op {
    Op::Binary(bytes(r, kind))
}

/// One input: a named sequence of operations.
type Input = (&'static str, Vec<(usize, Op)>);

/// Joins, sends and leaves as fast as they can be written.
fn flood() -> Vec<(usize, Op)> {
    let mut flood = vec![(A, Op::Hello(1)), (A, bin(2, join("flood", "", 0)))];
    for i in 0..30u64 {
        flood.push((A, bin(10 + i, send("flood", "x", &format!("k{}", i % 3)))));
        flood.push((A, bin(100 + i, leave("flood"))));
        flood.push((A, bin(200 + i, join("flood", "0-0", 200))));
    }
    flood.push((A, Op::Sync));
    flood
}

/// More joins than one session may hold.
fn too_many_rooms() -> Vec<(usize, Op)> {
    let mut rooms = vec![(A, Op::Hello(1))];
    for i in 0..34u64 {
        rooms.push((A, bin(10 + i, join(&format!("room {i}"), "", 1))));
    }
    rooms.push((A, Op::Sync));
    rooms
}

/// A closes while B's messages are fanned out to it: nothing may follow
/// the gateway's reply to A's Close.
fn close_while_receiving() -> Vec<(usize, Op)> {
    let mut close_while_receiving = vec![
        (A, Op::Hello(1)),
        (B, Op::Hello(1)),
        (A, bin(2, join("race", "", 0))),
        (B, bin(2, join("race", "", 0))),
        (A, Op::Sync),
        (B, Op::Sync),
    ];
    for i in 0..10u64 {
        close_while_receiving.push((B, bin(10 + i, send("race", "x", ""))));
    }
    close_while_receiving.push((A, Op::Close(1000)));
    for i in 10..20u64 {
        close_while_receiving.push((B, bin(10 + i, send("race", "y", ""))));
    }
    close_while_receiving.push((B, Op::Sync));
    close_while_receiving
}

/// Ordinary use: one member, two members, a resume, requests before Hello.
fn conversations() -> Vec<Input> {
    vec![
        (
            "conversation",
            vec![
                (A, Op::Hello(1)),
                (A, bin(2, join("lobby", "", 0))),
                (A, bin(3, send("lobby", "hi", ""))),
                (A, bin(4, typing("lobby", true))),
                (A, bin(5, fetch("lobby", "", 10))),
                (A, Op::Sync),
                (A, bin(6, leave("lobby"))),
                (A, Op::Sync),
            ],
        ),
        (
            "two-members",
            vec![
                (A, Op::Hello(1)),
                (B, Op::Hello(1)),
                (A, bin(2, join("lobby", "", 0))),
                (B, bin(2, join("lobby", "1-0", 0))),
                (A, bin(3, send("lobby", "hello B", "a-1"))),
                (B, bin(3, typing("lobby", true))),
                (B, bin(4, send("lobby", "hello A", "b-1"))),
                (B, bin(5, send("lobby", "hello A", "b-1"))),
                (A, Op::Sync),
                (B, Op::Sync),
                (A, bin(4, leave("lobby"))),
                (B, Op::Sync),
            ],
        ),
        (
            "resume",
            vec![
                (A, Op::Hello(1)),
                (A, bin(2, join("lobby", "", 0))),
                (A, bin(3, send("lobby", "before", ""))),
                (A, Op::Sync),
                (B, Op::Resume(1)),
                (B, bin(2, join("lobby", "0-0", 0))),
                (B, bin(3, send("lobby", "after", ""))),
                (B, Op::Sync),
            ],
        ),
        (
            "before-hello",
            vec![
                (A, bin(1, join("lobby", "", 0))),
                (A, Op::Binary(vec![0xff, 0x01])),
                (A, Op::Binary(Vec::new())),
                (
                    A,
                    Op::Binary(
                        ClientFrame {
                            r#ref: 2,
                            kind: None,
                        }
                        .encode_to_vec(),
                    ),
                ),
                (A, bin(3, hello(" "))),
                (A, bin(4, hello("\u{200B}x"))),
                (A, Op::Sync),
                (A, bin(5, hello("seed-name"))),
                (A, bin(6, hello("seed-name"))),
                (A, Op::Sync),
            ],
        ),
    ]
}

/// Text messages, oversized frames, close codes and pings.
fn edge_cases() -> Vec<Input> {
    vec![
        (
            "text-message",
            vec![
                (A, Op::Hello(1)),
                (A, Op::Text(b"hello".to_vec())),
                (A, Op::Sync),
            ],
        ),
        (
            "oversized",
            vec![(A, Op::Hello(1)), (A, Op::Oversized), (A, Op::Sync)],
        ),
        (
            "close-codes",
            vec![
                (A, Op::Hello(1)),
                (A, bin(2, join("lobby", "", 0))),
                (A, Op::Close(4000)),
                (B, Op::Close(1005)),
                (B, Op::Sync),
            ],
        ),
        (
            "pings",
            vec![
                (A, Op::Hello(1)),
                (A, Op::Ping(b"p1".to_vec())),
                (A, bin(2, join("lobby", "", 200))),
                (A, Op::Ping(Vec::new())),
                (A, bin(3, send("lobby", "between pings", ""))),
                (A, Op::Ping(vec![7; 125])),
                (A, Op::Sync),
            ],
        ),
    ]
}

/// History pages and replays at the edges of the id space.
fn history() -> Vec<Input> {
    vec![(
        "history",
        vec![
            (A, Op::Hello(1)),
            (A, bin(2, join("hist", "", 0))),
            (A, bin(3, send("hist", "one", ""))),
            (A, bin(4, send("hist", "two", ""))),
            (A, bin(5, fetch("hist", "", 1))),
            (A, bin(6, fetch("hist", "18446744073709551615-0", 200))),
            (A, bin(7, fetch("hist", "x", 0))),
            (
                A,
                bin(
                    8,
                    join("hist", "18446744073709551615-18446744073709551615", 0),
                ),
            ),
            (A, bin(9, send("hist", "three", ""))),
            (A, Op::Sync),
        ],
    )]
}
