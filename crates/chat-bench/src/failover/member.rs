//! The members of a failover run: their plans (rooms, schedule, source
//! address), and each one's life: a `Resuming` client that joins its rooms,
//! waits for the start, sends on its schedule and records every event.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use chat_client::v1::presence_change;
use chat_client::{ClientError, Event, Request, ResumeConfig, Resuming};
use tokio::sync::Semaphore;

use super::{Outcome, Plan, Shared, READ_BUFFER};
use crate::cli::FailoverArgs;
use crate::local_ips::pick;
use crate::member::{failure_kind, ws_config, SETUP_TIMEOUT};
use crate::pacing::Pacer;

impl Shared {
    /// Nothing counted yet; every member connected; members reach chat-lb at `url`.
    pub(super) fn new(args: &FailoverArgs, url: String) -> Self {
        Self {
            url,
            members_per_room: (args.room_size * args.rooms_per_member) as u64,
            reconnect_jitter: args.reconnect_jitter,
            ready: Mutex::new(BTreeMap::new()),
            setup_failures: Mutex::new(BTreeMap::new()),
            start_at: OnceLock::new(),
            start: CancellationToken::new(),
            send_for: args.warmup + args.duration,
            kill_at: OnceLock::new(),
            stop: CancellationToken::new(),
            connected: (0..args.members).map(|_| AtomicBool::new(true)).collect(),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            received: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
        }
    }
}

/// Each member's plan: `--room-size` members share a home room, where they
/// send in turns, and each is also in the rooms after it.
pub(super) fn plans(
    args: &FailoverArgs,
    run: &str,
    room_names: &[String],
    local_ips: &[IpAddr],
) -> Vec<Plan> {
    let rooms = room_names.len();
    (0..args.members)
        .map(|index| {
            let home = index / args.room_size;
            Plan {
                index,
                name: format!("fo{run}-{index}"),
                rooms: (0..args.rooms_per_member)
                    .map(|k| room_names[(home + k) % rooms].clone())
                    .collect(),
                home: room_names[home].clone(),
                // Home members take turns: the room gets `rate`, evenly spread.
                pacer: Pacer::staggered(
                    args.rate / args.room_size as f64,
                    index % args.room_size,
                    args.room_size,
                ),
                local: pick(local_ips, index),
            }
        })
        .collect()
}

/// Every room with the indexes of its members.
pub(super) fn room_members(room_names: &[String], plans: &[Plan]) -> Vec<(String, Vec<usize>)> {
    room_names
        .iter()
        .map(|room| {
            let members = plans
                .iter()
                .filter(|p| p.rooms.contains(room))
                .map(|p| p.index)
                .collect();
            (room.clone(), members)
        })
        .collect()
}

impl Outcome {
    /// Takes one event of member `index` into its outcome and the shared counters.
    fn record(&mut self, index: usize, event: Event, shared: &Shared) {
        match event {
            Event::Joined { joined, .. } => {
                for message in &joined.history {
                    self.receipt(&joined.room, &message.id, shared);
                }
            }
            Event::Message(message) => self.receipt(&message.room, &message.id, shared),
            Event::Presence(presence) => {
                if shared.kill_at.get().is_some() {
                    let left = presence.kind() == presence_change::Kind::Left;
                    self.presence_after_kill
                        .push((presence.room, presence.username, left));
                }
            }
            Event::Acked { ack, .. } => {
                if let Ok(id) = ack.id.parse() {
                    self.acked.push((ack.room, id));
                }
                self.acked_as_duplicate += u64::from(ack.duplicate);
                shared.acked.fetch_add(1, Relaxed);
                shared.expected.fetch_add(shared.members_per_room, Relaxed);
            }
            Event::Refused { request, code, .. } => {
                *self
                    .refused
                    .entry(code.as_str_name().to_owned())
                    .or_default() += 1;
                if matches!(request, Request::Send { .. }) {
                    shared.refused.fetch_add(1, Relaxed);
                }
            }
            Event::Disconnected { .. } => {
                self.disconnects += 1;
                shared.connected[index].store(false, Relaxed);
            }
            Event::Resumed(resumption) => {
                self.resumptions.push(resumption);
                shared.connected[index].store(true, Relaxed);
                shared.resumed.fetch_add(1, Relaxed);
            }
            Event::Ended(reason) => {
                self.ended = Some(reason);
                shared.connected[index].store(false, Relaxed);
            }
            Event::Left { .. } | Event::Typing(_) | Event::Other(_) => {}
        }
    }

    /// Counts the receipt of message `id` in `room` (a push or a replay).
    fn receipt(&mut self, room: &str, id: &str, shared: &Shared) {
        if let Ok(id) = id.parse() {
            self.received.entry(room.to_owned()).or_default().push(id);
            shared.received.fetch_add(1, Relaxed);
        }
    }
}

/// One member's life: set-up, waiting for the start, chatting (its sends
/// on its schedule, every event recorded) until the run stops it.
pub(super) async fn member(
    plan: Plan,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
) -> (usize, Outcome) {
    let mut outcome = Outcome::default();
    let index = plan.index;
    let setup = set_up(&plan, &shared, &permits, &mut outcome);
    let failure = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok(client)) => {
            chat(&plan, &shared, client, &mut outcome).await;
            return (index, outcome);
        }
        Ok(Err(e)) => failure_kind(&e),
        Err(_) => "timed out".into(),
    };
    *shared.setup_failures.lock().entry(failure).or_default() += 1;
    (index, outcome)
}

/// Connects (one of `permits` at a time) and joins every room of the plan,
/// recording the events on the way.
async fn set_up(
    plan: &Plan,
    shared: &Shared,
    permits: &Semaphore,
    outcome: &mut Outcome,
) -> Result<Resuming, ClientError> {
    let _permit = permits.acquire().await.expect("never closed");
    let mut config = ResumeConfig::new(shared.url.clone(), plan.name.clone());
    config.local_addr = plan.local;
    config.ws_config = ws_config(READ_BUFFER);
    config.backoff.first_jitter = shared.reconnect_jitter;
    let mut client = Resuming::connect(config).await?;
    for room in &plan.rooms {
        client.handle().join_with(room, "", 1).await?;
    }
    let mut joined = 0;
    while joined < plan.rooms.len() {
        let Some(event) = client.next_event().await else {
            return Err(ClientError::Closed(None));
        };
        match &event {
            Event::Joined { .. } => joined += 1,
            Event::Refused { code, .. } => {
                return Err(ClientError::Server {
                    code: *code,
                    message: "join refused".into(),
                })
            }
            _ => {}
        }
        outcome.record(plan.index, event, shared);
    }
    Ok(client)
}

/// A set-up member: reports itself ready, records events until the start,
/// then sends on its schedule until the run stops it.
async fn chat(plan: &Plan, shared: &Shared, mut client: Resuming, outcome: &mut Outcome) {
    let index = plan.index;
    outcome.gateway = client.welcome().gateway_id.clone();
    *shared
        .ready
        .lock()
        .entry(outcome.gateway.clone())
        .or_default() += 1;

    // Until the start, only events.
    loop {
        tokio::select! {
            () = shared.start.cancelled() => break,
            () = shared.stop.cancelled() => return,
            event = client.next_event() => match event {
                Some(event) => outcome.record(index, event, shared),
                None => return,
            },
        }
    }
    let start = *shared.start_at.get().expect("set before the start");
    let mut seq = 0u64;
    loop {
        let due = plan.pacer.due_at(seq);
        let sending = due < shared.send_for;
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            event = client.next_event() => match event {
                Some(event) => outcome.record(index, event, shared),
                None => break,
            },
            () = tokio::time::sleep_until((start + due).into()), if sending => {
                let text = format!("{} #{seq}", plan.name);
                if client.handle().send(&plan.home, &text).await.is_ok() {
                    outcome.sent += 1;
                    shared.sent.fetch_add(1, Relaxed);
                }
                seq += 1;
            }
        }
    }
    // Closed with the others, by the end of the run.
}
