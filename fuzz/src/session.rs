//! The `session` target: the real gateway library (`chat_gateway::run` on
//! the embedded memory bridge, on a loopback listener, started once per
//! process) fed arbitrary sequences of WebSocket messages from up to two
//! clients at once. After every input, the gateway must still welcome a
//! fresh client and answer its Ping.
//!
//! Input format (see [`parse`]): a sequence of operations, each a tag byte
//! and its operand. Bit 7 of the tag picks the client (A or B, each opened
//! on its first operation); the low nibble picks the operation:
//!
//! | nibble | operation | operand |
//! |---|---|---|
//! | 0 | binary message | u16 LE length, then that many bytes (fewer at the end) |
//! | 1 | text message (1003) | the same |
//! | 2 | WebSocket ping | the same (at most 125 bytes used) |
//! | 3 | close frame | u16 LE close code |
//! | 4 | Hello with a fresh, valid name | u8 ref |
//! | 5 | Hello resuming the other client's session (its name and resume token) | u8 ref |
//! | 6 | sync: a Ping frame, then wait for its Pong (or the end of the connection) | none |
//! | 7 | a binary message one byte over the frame limit (1009) | none |
//! | other | binary message, as 0 | |
//!
//! Oracles: no panic anywhere in the process (the gateway's tasks
//! included); every frame the gateway sends is a valid WebSocket frame, none
//! after its Close, and each decodes as a `ServerFrame`; message ids parse,
//! increase within a room on one connection (history in `Joined` and
//! `HistoryPage` included), and no room push reaches a connection that is not
//! in that room; a sync is answered in time; and after the input a fresh
//! client gets its Welcome and Pong.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chat_proto::v1::{client_frame, ClientFrame, Hello, Ping, ServerFrame};
use chat_proto::Message as _;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod oracle;

use self::oracle::{check_server_frame, is_broken_stream, Ended, Seen, Shared};

/// The gateway's frame limit in this harness (its default).
pub const MAX_FRAME_BYTES: usize = chat_proto::MAX_FRAME_BYTES;
/// Operations carried out per input at most (the rest is ignored).
const MAX_OPS: usize = 256;
/// Oversized messages per input at most (each is 64 KiB).
const MAX_OVERSIZED: usize = 2;
/// How long the gateway has to answer a sync, close a connection or
/// welcome the probe. Generous: sanitizers and a busy 2-core machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// The `ref` of the harness's own Ping frames (the low bits count).
pub(crate) const MARKER: u64 = 0xF022_0000_0000_0000;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One operation of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Close(u16),
    Hello(u8),
    Resume(u8),
    Sync,
    Oversized,
}

/// Which client an operation is for.
pub type Client = usize;

/// Parses an input into operations (never fails: what cannot be read is
/// dropped).
pub fn parse(mut data: &[u8]) -> Vec<(Client, Op)> {
    let mut ops = Vec::new();
    let mut oversized = 0;
    while let Some((&tag, rest)) = data.split_first() {
        data = rest;
        if ops.len() == MAX_OPS {
            break;
        }
        let client = usize::from(tag >> 7);
        let take_bytes = |data: &mut &[u8]| -> Vec<u8> {
            let len = match data {
                [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
                _ => 0,
            };
            *data = data.get(2..).unwrap_or(&[]);
            let (bytes, rest) = data.split_at(len.min(data.len()));
            *data = rest;
            bytes.to_vec()
        };
        let op = match tag & 0x0f {
            1 => Op::Text(take_bytes(&mut data)),
            2 => Op::Ping(take_bytes(&mut data)),
            3 => {
                let code = match data {
                    [lo, hi, ..] => u16::from_le_bytes([*lo, *hi]),
                    _ => 1000,
                };
                data = data.get(2..).unwrap_or(&[]);
                Op::Close(code)
            }
            4 | 5 => {
                let r = data.first().copied().unwrap_or(0);
                data = data.get(1..).unwrap_or(&[]);
                if tag & 0x0f == 4 {
                    Op::Hello(r)
                } else {
                    Op::Resume(r)
                }
            }
            6 => Op::Sync,
            7 if oversized < MAX_OVERSIZED => {
                oversized += 1;
                Op::Oversized
            }
            7 => continue,
            _ => Op::Binary(take_bytes(&mut data)),
        };
        ops.push((client, op));
    }
    ops
}

/// The input that [`parse`] reads as `ops` (for seeds).
pub fn encode(ops: &[(Client, Op)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (client, op) in ops {
        let conn = if *client == 0 { 0 } else { 0x80 };
        let mut bytes = |tag: u8, data: &[u8]| {
            out.push(conn | tag);
            out.extend_from_slice(&(data.len() as u16).to_le_bytes());
            out.extend_from_slice(data);
        };
        match op {
            Op::Binary(data) => bytes(0, data),
            Op::Text(data) => bytes(1, data),
            Op::Ping(data) => bytes(2, data),
            Op::Close(code) => {
                out.push(conn | 3);
                out.extend_from_slice(&code.to_le_bytes());
            }
            Op::Hello(r) => out.extend_from_slice(&[conn | 4, *r]),
            Op::Resume(r) => out.extend_from_slice(&[conn | 5, *r]),
            Op::Sync => out.push(conn | 6),
            Op::Oversized => out.push(conn | 7),
        }
    }
    out
}

/// Runs one input against the gateway of this process; panics on a finding.
pub fn run(data: &[u8]) {
    let gateway = gateway();
    let ops = parse(data);
    gateway.runtime.block_on(async {
        // Each step has its own deadline; this one only catches what slips through.
        tokio::time::timeout(ANSWER_WITHIN * 6, drive(gateway.addr, ops))
            .await
            .expect("the input did not finish within two minutes");
    });
    // Taken first: the panic hook locks PANICKED too.
    let panicked = PANICKED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(message) = panicked {
        panic!("a task panicked while this input ran: {message}");
    }
}

struct Gateway {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
}

/// The first panic anywhere in the process (a gateway task's included,
/// which tokio would otherwise catch and the fuzzer never see).
static PANICKED: Mutex<Option<String>> = Mutex::new(None);

/// The gateway of this process, started on first use.
fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        // Chains to the hook already set (libFuzzer's aborts the process).
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let mut first = PANICKED.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(info.to_string());
            }
            drop(first);
            previous(info);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local address");
        let config = config();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let ready = move || {
                let _ = ready_tx.send(());
            };
            let result =
                chat_gateway::run(listener, None, config, ready, std::future::pending()).await;
            panic!("the gateway stopped: {result:?}");
        });
        ready_rx
            .recv_timeout(ANSWER_WITHIN)
            .expect("the gateway did not start");
        Gateway { runtime, addr }
    })
}

/// The gateway's defaults, except what would make a fuzzer's many
/// connections from one address look like an attack, and state bounded so
/// that long runs do not grow without end.
fn config() -> chat_gateway::Config {
    use clap::Parser as _;
    let mut config = chat_gateway::Config::try_parse_from([
        "chat-gateway",
        "--listen",
        "127.0.0.1:0",
        "--gateway-id",
        "fuzz",
        "--web-root",
        "/nonexistent",
        "--max-connections",
        "100000",
        "--max-connections-per-ip",
        "100000",
        "--max-sockets-per-ip",
        "100000",
        "--connection-rate-per-ip",
        "1000000",
        "--connection-burst-per-ip",
        "1000000",
        "--history-len",
        "64",
        "--max-rooms-retained",
        "256",
        "--max-frame-bytes",
        &MAX_FRAME_BYTES.to_string(),
    ])
    .expect("gateway flags");
    // Whatever the environment says (CHAT_REDIS), the embedded bridge.
    config.redis = None;
    config
}

/// Whether to print every operation and every frame received
/// (`CHAT_FUZZ_TRACE=1`, for reading what a crashing input does).
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CHAT_FUZZ_TRACE").is_some_and(|v| v != "0"))
}

/// Names of the fresh Hellos, unique in this process.
fn fresh_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("fz{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn frame(r: u64, kind: client_frame::Kind) -> Message {
    Message::Binary(
        ClientFrame {
            r#ref: r,
            kind: Some(kind),
        }
        .encode_to_vec()
        .into(),
    )
}

struct Conn {
    name: &'static str,
    sink: SplitSink<Ws, Message>,
    /// False once a send failed or a Close was sent.
    writable: bool,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    next_marker: u64,
}

impl Conn {
    async fn open(addr: SocketAddr, name: &'static str) -> Conn {
        let url = format!("ws://{addr}/ws");
        let (ws, _) = tokio::time::timeout(ANSWER_WITHIN, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("client {name}: the WebSocket handshake timed out"))
            .unwrap_or_else(|e| panic!("client {name}: the gateway refused a WebSocket: {e}"));
        let (sink, stream) = ws.split();
        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen::default()),
            changed: Notify::new(),
        });
        let reader = tokio::spawn(read(stream, shared.clone(), name));
        Conn {
            name,
            sink,
            writable: true,
            shared,
            reader,
            next_marker: 0,
        }
    }

    async fn send(&mut self, message: Message) {
        if !self.writable {
            return;
        }
        let closing = matches!(message, Message::Close(_));
        // A send can wait only while the gateway does not read, which the
        // sync after the input notices; this bound keeps an input finite.
        match tokio::time::timeout(ANSWER_WITHIN, self.sink.send(message)).await {
            Ok(Ok(())) if !closing => {}
            Ok(_) => self.writable = false,
            Err(_) => {
                // The gateway stopped reading: fine only if it is closing.
                let ended = self.shared.seen().ended;
                assert!(ended, "client {}: the gateway stopped reading", self.name);
                self.writable = false;
            }
        }
    }

    /// Sends a Ping frame and waits for its answer (a Pong, or an Error
    /// NOT_AUTHENTICATED before Hello), or for the connection to end.
    async fn sync(&mut self) {
        if !self.writable {
            return;
        }
        self.next_marker += 1;
        let marker = self.next_marker;
        let ping = frame(
            MARKER | marker,
            client_frame::Kind::Ping(Ping { client_time_ms: 7 }),
        );
        self.send(ping).await;
        let done = |seen: &Seen| seen.ended || seen.marker >= marker;
        self.wait(done, "answer a Ping").await;
    }

    async fn wait(&self, done: impl Fn(&Seen) -> bool, what: &str) {
        let waited = tokio::time::timeout(ANSWER_WITHIN, async {
            loop {
                let changed = self.shared.changed.notified();
                if done(&self.shared.seen()) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "client {}: the gateway did not {what} within {ANSWER_WITHIN:?}",
            self.name
        );
    }

    /// Closes normally and waits until the gateway has closed too.
    async fn close(mut self) {
        self.sync().await;
        self.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
        self.wait(|seen| seen.ended, "close the connection").await;
        // A reader's panic is reported by `run`, with its own message.
        let _ = self.reader.await;
    }
}

/// Reads everything the gateway sends to one client and checks it.
async fn read(mut stream: SplitStream<Ws>, shared: Arc<Shared>, name: &'static str) {
    let _ended = Ended(shared.clone());
    let mut closed = false;
    while let Some(message) = stream.next().await {
        if tracing() {
            match &message {
                Ok(Message::Binary(data)) => {
                    eprintln!("  {name} <- {:?}", ServerFrame::decode(data.as_ref()))
                }
                other => eprintln!("  {name} <- {other:?}"),
            }
        }
        match message {
            Ok(Message::Binary(data)) => {
                assert!(!closed, "client {name}: data after the gateway's Close");
                let frame = ServerFrame::decode(data.as_ref()).unwrap_or_else(|e| {
                    panic!("client {name}: the gateway sent an undecodable frame: {e}")
                });
                check_server_frame(&shared, frame, name);
            }
            Ok(Message::Text(_)) => panic!("client {name}: the gateway sent a text message"),
            Ok(Message::Close(_)) => closed = true,
            Ok(_) => {} // pings and pongs
            Err(e) => {
                if is_broken_stream(&e) {
                    panic!("client {name}: the gateway broke the WebSocket protocol: {e}");
                }
                break;
            }
        }
    }
}

async fn drive(addr: SocketAddr, ops: Vec<(Client, Op)>) {
    const NAMES: [&str; 2] = ["A", "B"];
    let mut conns: [Option<Conn>; 2] = [None, None];
    for (client, op) in ops {
        if conns[client].is_none() {
            conns[client] = Some(Conn::open(addr, NAMES[client]).await);
        }
        // The other client's Welcome, for a resume.
        let other = conns[1 - client]
            .as_ref()
            .and_then(|c| c.shared.seen().welcome.clone());
        let conn = conns[client].as_mut().expect("opened above");
        if tracing() {
            match &op {
                Op::Binary(data) => eprintln!(
                    "{} -> {:?}",
                    NAMES[client],
                    ClientFrame::decode(data.as_slice())
                ),
                op => eprintln!("{} -> {op:?}", NAMES[client]),
            }
        }
        match op {
            Op::Binary(data) => conn.send(Message::Binary(data.into())).await,
            Op::Text(data) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                conn.send(Message::Text(text.into())).await
            }
            Op::Ping(mut data) => {
                data.truncate(125);
                conn.send(Message::Ping(data.into())).await
            }
            Op::Close(code) => {
                conn.send(Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: "".into(),
                })))
                .await
            }
            Op::Hello(r) => {
                let hello = Hello {
                    username: fresh_name(),
                    client: "fuzz".into(),
                    ..Hello::default()
                };
                conn.send(frame(u64::from(r), client_frame::Kind::Hello(hello)))
                    .await
            }
            Op::Resume(r) => {
                let (username, resume_token) = other.unwrap_or_default();
                let hello = Hello {
                    username,
                    resume_token,
                    client: "fuzz".into(),
                    ..Hello::default()
                };
                conn.send(frame(u64::from(r), client_frame::Kind::Hello(hello)))
                    .await
            }
            Op::Sync => conn.sync().await,
            Op::Oversized => {
                conn.send(Message::Binary(vec![0x0a; MAX_FRAME_BYTES + 1].into()))
                    .await
            }
        }
    }
    for conn in conns.into_iter().flatten() {
        conn.close().await;
    }
    probe(addr).await;
}

/// A fresh client is welcomed and its Ping answered.
async fn probe(addr: SocketAddr) {
    let mut conn = Conn::open(addr, "probe").await;
    let hello = Hello {
        username: fresh_name(),
        client: "fuzz-probe".into(),
        ..Hello::default()
    };
    conn.send(frame(1, client_frame::Kind::Hello(hello))).await;
    conn.sync().await;
    {
        let seen = conn.shared.seen();
        assert!(seen.welcome.is_some(), "the probe was not welcomed");
        assert!(!seen.ended, "the probe's connection ended");
    }
    conn.close().await;
}
