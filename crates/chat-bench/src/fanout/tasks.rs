//! The tasks of a fan-out run: each publisher's sending task, each member's receiving
//! task, what they share (`Publisher`, `Events`), and `Tasks`, which starts them all and
//! winds them down.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use chat_client::v1::{client_frame, ClientFrame, ErrorCode, Send};
use chat_client::{ClientReceiver, ClientSender};
use futures_util::FutureExt as _;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::{FanoutArgs, WindowRelease};
use crate::latency::{Clock, Recorder, Shards};
use crate::lean_frame::LeanServerFrame;
use crate::member::failure_kind;
use crate::pacing::{Pacer, Step};
use crate::payload::Stamp;

/// Refs of Sends are `REF_BASE + seq`, so a reply names the message it answers.
const REF_BASE: u64 = 1 << 32;

/// Sends written per flush at most.
const MAX_BATCH: u64 = 256;

/// Frames a receiver handles between checks of the stop signal while busy.
const STOP_CHECK_EVERY: u32 = 1024;

/// Every task of a run, and what the window's monitor and the report read from them.
pub(super) struct Tasks {
    pub(super) clock: Arc<Clock>,
    /// Latency histograms, one per member shard.
    pub(super) shards: Arc<Shards>,
    pub(super) events: Arc<Events>,
    /// Tells the receivers to stop.
    stop: CancellationToken,
    /// One per publisher, in publisher order.
    pub(super) publishers: Vec<Arc<Publisher>>,
    /// Receivers return the duplicates they saw.
    receivers: JoinSet<u64>,
    /// Publishers hand their sender back when they end.
    publishing: JoinSet<(ClientSender, Result<(), chat_client::ClientError>)>,
    /// Senders of members that do not publish (or no longer do), to close at the end.
    idle_senders: Vec<ClientSender>,
}

impl Tasks {
    /// Starts a receiving task for every member and a sending task for every publisher
    /// (the first `--publishers` members of each room); the clock starts now.
    pub(super) fn start(
        args: &FanoutArgs,
        rooms: &[String],
        members: Vec<(ClientSender, ClientReceiver)>,
    ) -> Self {
        let windowed = args.rate == 0.0;
        let publishers_total = args.rooms * args.publishers;
        let mut tasks = Self {
            clock: Arc::new(Clock::start(args.warmup, args.duration)),
            shards: Shards::new(16),
            events: Arc::new(Events::default()),
            stop: CancellationToken::new(),
            publishers: Vec::with_capacity(publishers_total),
            receivers: JoinSet::new(),
            publishing: JoinSet::new(),
            idle_senders: Vec::with_capacity(members.len()),
        };
        for (index, (tx, rx)) in members.into_iter().enumerate() {
            let (room, member) = (index / args.members, index % args.members);
            let own = (member < args.publishers).then(|| {
                let id = (room * args.publishers + member) as u32;
                let state = Arc::new(Publisher::new(id, args.window));
                tasks.publishers.push(Arc::clone(&state));
                state
            });
            let receiver = Receiver {
                clock: Arc::clone(&tasks.clock),
                recorder: tasks.shards.recorder(index),
                events: Arc::clone(&tasks.events),
                room_first_publisher: (room * args.publishers) as u64,
                last_seq: vec![u64::MAX; args.publishers],
                duplicates: 0,
                own: own.clone(),
                release_on_ack: windowed && args.window_release == WindowRelease::Ack,
                release_on_echo: windowed && args.window_release == WindowRelease::Echo,
            };
            tasks.receivers.spawn(receiver.run(rx, tasks.stop.clone()));
            match own {
                Some(state) => {
                    let sending = Sending {
                        clock: Arc::clone(&tasks.clock),
                        state,
                        room: rooms[room].clone(),
                        payload: args.payload,
                        pacer: (!windowed).then(|| {
                            Pacer::staggered(
                                args.rate,
                                tasks.publishers.len() - 1,
                                publishers_total,
                            )
                        }),
                    };
                    tasks.publishing.spawn(sending.run(tx));
                }
                None => tasks.idle_senders.push(tx),
            }
        }
        tasks
    }

    /// Deliveries the measured Acks so far call for.
    pub(super) fn expected(&self, members: usize) -> u64 {
        self.publishers
            .iter()
            .map(|p| p.acked.load(Relaxed))
            .sum::<u64>()
            * members as u64
    }

    /// Whether every publisher has ended and every measured send was answered.
    pub(super) fn all_answered(&self) -> bool {
        let outstanding: u64 = self
            .publishers
            .iter()
            .map(|p| {
                p.sent
                    .load(Relaxed)
                    .saturating_sub(p.acked.load(Relaxed) + p.errors.load(Relaxed))
            })
            .sum();
        outstanding == 0 && self.publishing.is_empty()
    }

    /// Collects the publishers that ended (at the window's end, or on a send error).
    pub(super) fn reap_publishers(&mut self) -> Result<()> {
        while let Some(Some(result)) = self.publishing.join_next().now_or_never() {
            let (tx, outcome) = result.context("publisher task failed")?;
            if let Err(e) = outcome {
                Events::count(
                    &self.events.disconnects,
                    format!("send failed: {}", failure_kind(&e)),
                );
            }
            self.idle_senders.push(tx);
        }
        Ok(())
    }

    /// Stops every task, closes every connection; returns the duplicates the members saw.
    pub(super) async fn wind_down(&mut self) -> Result<u64> {
        self.stop.cancel();
        let mut duplicates = 0;
        while let Some(result) = self.receivers.join_next().await {
            duplicates += result.context("receiver task failed")?;
        }
        self.publishing.abort_all();
        while let Some(result) = self.publishing.join_next().await {
            if let Ok((tx, _)) = result {
                self.idle_senders.push(tx);
            }
        }
        close_all(std::mem::take(&mut self.idle_senders)).await;
        Ok(duplicates)
    }
}

/// Closes every connection politely, all at once, without waiting long.
async fn close_all(senders: Vec<ClientSender>) {
    let mut closing = JoinSet::new();
    for mut tx in senders {
        closing.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), tx.close()).await;
        });
    }
    while closing.join_next().await.is_some() {}
}

/// What a publisher's sending task and its receiving task share.
pub(super) struct Publisher {
    /// Global publisher index (in the stamps).
    id: u32,
    /// Free slots of the in-flight window (rate 0 only).
    window: Semaphore,
    /// First sequence number sent inside the measured window (MAX: not yet).
    first_measured: AtomicU64,
    /// Measured messages sent, acknowledged, refused with an Error.
    pub(super) sent: AtomicU64,
    pub(super) acked: AtomicU64,
    pub(super) errors: AtomicU64,
    /// Largest delay of a paced send behind its schedule.
    pub(super) max_lag_ns: AtomicU64,
}

impl Publisher {
    fn new(id: u32, window: usize) -> Self {
        Self {
            id,
            window: Semaphore::new(window),
            first_measured: AtomicU64::new(u64::MAX),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            max_lag_ns: AtomicU64::new(0),
        }
    }

    /// Whether message `seq` was sent inside the window. A reply always
    /// arrives after its send, and the publisher stops at the window's end,
    /// so "at or after the first measured one" is exact.
    fn is_measured(&self, seq: u64) -> bool {
        seq >= self.first_measured.load(Acquire)
    }
}

/// Counters for rare events, shared by all receivers.
#[derive(Default)]
pub(super) struct Events {
    /// Error frames answering Sends, by code name.
    pub(super) errors_by_code: Mutex<BTreeMap<String, u64>>,
    /// Connections that ended before the run did, by reason.
    pub(super) disconnects: Mutex<BTreeMap<String, u64>>,
    reconnect_frames: AtomicU64,
    decode_errors: AtomicU64,
}

impl Events {
    fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock().entry(key).or_default() += 1;
    }
}

/// A publisher's sending task.
struct Sending {
    clock: Arc<Clock>,
    state: Arc<Publisher>,
    room: String,
    payload: usize,
    /// The schedule; `None` at rate 0 (window-bound).
    pacer: Option<Pacer>,
}

impl Sending {
    /// Publishes until the window ends; hands the sender back for closing.
    async fn run(
        self,
        mut tx: ClientSender,
    ) -> (ClientSender, Result<(), chat_client::ClientError>) {
        let result = match self.pacer {
            Some(pacer) => self.paced(&mut tx, pacer).await,
            None => self.windowed(&mut tx).await,
        };
        (tx, result)
    }

    /// Rate 0: send whenever the window has room, in batches.
    async fn windowed(&self, tx: &mut ClientSender) -> Result<(), chat_client::ClientError> {
        let (_, end) = self.clock.window();
        let mut deadline = pin!(tokio::time::sleep_until(end.into()));
        let mut seq = 0u64;
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut deadline => return Ok(()),
                permit = self.state.window.acquire() => permit.expect("the window is never closed"),
            };
            permit.forget();
            let mut batch = 1;
            while batch < MAX_BATCH {
                match self.state.window.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                batch += 1;
            }
            for _ in 0..batch {
                let now = self.clock.now_ns();
                if now >= self.clock.end_ns {
                    tx.flush().await?;
                    return Ok(());
                }
                self.feed(tx, seq, now).await?;
                seq += 1;
            }
            tx.flush().await?;
        }
    }

    /// Rate > 0: send on an absolute schedule, in bursts of what is due.
    async fn paced(
        &self,
        tx: &mut ClientSender,
        pacer: Pacer,
    ) -> Result<(), chat_client::ClientError> {
        let end = Duration::from_nanos(self.clock.end_ns);
        let mut seq = 0u64;
        loop {
            let elapsed = self.clock.epoch.elapsed();
            match pacer.step(seq, elapsed, end, MAX_BATCH) {
                Step::Done => return tx.flush().await,
                Step::Wait(due) => tokio::time::sleep_until((self.clock.epoch + due).into()).await,
                Step::Send(upto) => {
                    let lag = elapsed.saturating_sub(pacer.due_at(seq));
                    self.state
                        .max_lag_ns
                        .fetch_max(lag.as_nanos() as u64, Relaxed);
                    while seq < upto {
                        let now = self.clock.now_ns();
                        if now >= self.clock.end_ns {
                            // Stamped after the end it would not be measured.
                            break;
                        }
                        self.feed(tx, seq, now).await?;
                        seq += 1;
                    }
                    tx.flush().await?;
                }
            }
        }
    }

    /// Queues message `seq` stamped `now` (not flushed).
    async fn feed(
        &self,
        tx: &mut ClientSender,
        seq: u64,
        now: u64,
    ) -> Result<(), chat_client::ClientError> {
        if self.clock.measured(now) {
            if self.state.first_measured.load(Relaxed) == u64::MAX {
                self.state.first_measured.store(seq, Release);
            }
            self.state.sent.fetch_add(1, Relaxed);
        }
        let text = Stamp {
            sent_ns: now,
            publisher: self.state.id,
            seq,
        }
        .to_text(self.payload);
        let send = Send {
            room: self.room.clone(),
            text,
            client_msg_id: String::new(),
        };
        let frame = ClientFrame {
            r#ref: REF_BASE + seq,
            kind: Some(client_frame::Kind::Send(send)),
        };
        tx.feed_frame(frame).await
    }
}

/// A member's receiving task.
struct Receiver {
    clock: Arc<Clock>,
    recorder: Recorder,
    events: Arc<Events>,
    /// Global index of this room's first publisher.
    room_first_publisher: u64,
    /// Last sequence number seen per publisher of the room (MAX: none yet).
    last_seq: Vec<u64>,
    duplicates: u64,
    /// Set when this member is a publisher: its shared state.
    own: Option<Arc<Publisher>>,
    release_on_ack: bool,
    release_on_echo: bool,
}

impl Receiver {
    /// Reads until stopped or disconnected; returns the duplicates it saw.
    async fn run(mut self, mut rx: ClientReceiver, stop: CancellationToken) -> u64 {
        let mut stopped = pin!(stop.cancelled());
        let mut busy = 0u32;
        loop {
            // Take what is already readable without waiting; before waiting,
            // publish the counts so the progress and the drain see them.
            let next = match rx.next_binary().now_or_never() {
                Some(next) => {
                    busy += 1;
                    if busy >= STOP_CHECK_EVERY {
                        busy = 0;
                        if stop.is_cancelled() {
                            break;
                        }
                    }
                    next
                }
                None => {
                    self.recorder.flush();
                    tokio::select! {
                        biased;
                        next = rx.next_binary() => next,
                        () = &mut stopped => break,
                    }
                }
            };
            match next {
                Ok(Some(data)) => self.handle(data),
                Ok(None) => {
                    let reason = match rx.close_info() {
                        Some(info) => format!("closed by server: {}", info.code),
                        None => "connection ended".into(),
                    };
                    Events::count(&self.events.disconnects, reason);
                    break;
                }
                Err(e) => {
                    Events::count(&self.events.disconnects, failure_kind(&e));
                    break;
                }
            }
        }
        self.recorder.flush();
        self.duplicates
    }

    #[inline]
    fn handle(&mut self, data: Bytes) {
        let frame = match LeanServerFrame::decode(data) {
            Ok(frame) => frame,
            Err(_) => {
                self.events.decode_errors.fetch_add(1, Relaxed);
                return;
            }
        };
        if let Some(message) = frame.message {
            let Some(stamp) = Stamp::parse(&message.text) else {
                return;
            };
            let now = self.clock.now_ns();
            if self.clock.measured(stamp.sent_ns) {
                self.recorder.record(now.saturating_sub(stamp.sent_ns));
            } else {
                self.recorder.count();
            }
            if let Some(last) = (u64::from(stamp.publisher))
                .checked_sub(self.room_first_publisher)
                .and_then(|local| self.last_seq.get_mut(local as usize))
            {
                if *last != u64::MAX && stamp.seq <= *last {
                    self.duplicates += 1;
                } else {
                    *last = stamp.seq;
                }
            }
            if self.release_on_echo {
                if let Some(own) = self.own.as_ref().filter(|own| own.id == stamp.publisher) {
                    own.window.add_permits(1);
                }
            }
            return;
        }
        if frame.reconnect.is_some() {
            self.events.reconnect_frames.fetch_add(1, Relaxed);
            return;
        }
        let Some(own) = &self.own else { return };
        let Some(seq) = frame.r#ref.checked_sub(REF_BASE) else {
            return;
        };
        if frame.ack.is_some() {
            if own.is_measured(seq) {
                own.acked.fetch_add(1, Relaxed);
            }
            if self.release_on_ack {
                own.window.add_permits(1);
            }
        } else if let Some(error) = frame.error {
            if own.is_measured(seq) {
                own.errors.fetch_add(1, Relaxed);
            }
            let code = ErrorCode::try_from(error.code).map_or_else(
                |_| format!("code {}", error.code),
                |c| c.as_str_name().to_owned(),
            );
            Events::count(&self.events.errors_by_code, code);
            // A refused message frees its slot whichever release is chosen.
            if self.release_on_ack || self.release_on_echo {
                own.window.add_permits(1);
            }
        }
    }
}
