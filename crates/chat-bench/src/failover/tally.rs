//! The tally of a failover run: how the killed gateway's members came back,
//! the presence flicker others saw, and whether every acknowledged message
//! reached every member of its room exactly once, in order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chat_proto::MessageId;
use hdrhistogram::Histogram;

use super::results::{FailoverResults, Millis};
use super::{Outcome, Tallied};
use crate::cli::FailoverArgs;
use crate::latency::{new_histogram, LatencySummary};

/// Turns the members' outcomes into the results, with the recovery times
/// (loss to back, nanoseconds) of the killed gateway's members.
pub(super) fn tally(
    args: &FailoverArgs,
    outcomes: &[(usize, Outcome)],
    names: &[String],
    room_members: &[(String, Vec<usize>)],
    victim: &str,
    kill_at: Instant,
    measured: Tallied,
) -> (FailoverResults, Histogram<u64>) {
    let by_index: BTreeMap<usize, &Outcome> = outcomes.iter().map(|(i, o)| (*i, o)).collect();
    let hit: BTreeSet<&str> = by_index
        .iter()
        .filter(|(_, o)| o.gateway == victim)
        .map(|(i, _)| names[*i].as_str())
        .collect();
    let presence = presence(&by_index, &hit, &measured.checker);
    let back = recoveries(&by_index, names, victim, kill_at, &presence.seen_leaving);
    let counts = counts(&by_index);
    let deliveries = deliveries(&by_index, room_members);
    let refused: u64 = counts.refused_by_code.values().sum();
    let on_killed_gateway = hit.len() as u64;
    let millis = |hist: &Histogram<u64>| Millis::of(&LatencySummary::from_histogram(hist));
    let results = FailoverResults {
        members: args.members,
        rooms: room_members.len(),
        members_per_room: args.room_size * args.rooms_per_member,
        setup_secs: measured.setup_secs,
        killed_gateway: victim.to_owned(),
        restarted: args.restart,
        restart_secs: measured.restart_secs,
        on_killed_gateway,
        resumed: back.resumed,
        resumed_by_token: back.by_token,
        locked_out: on_killed_gateway - back.resumed,
        recovery: millis(&back.recovery),
        recovery_from_kill: millis(&back.from_kill),
        loss_seen_after_kill: millis(&back.seen),
        connect: millis(&back.phases[0]),
        hello: millis(&back.phases[1]),
        rejoin: millis(&back.phases[2]),
        max_attempts: counts.max_attempts,
        name_taken: counts.name_taken,
        presence_flicker: presence.flicker,
        presence_other_examples: presence.other_examples,
        seen_leaving: presence.seen_leaving.len() as u64,
        presence_other: presence.other,
        unexpected_disconnects: back.unexpected,
        ended: counts.ended_reasons.values().sum(),
        ended_reasons: counts.ended_reasons,
        sent: counts.sent,
        acked: deliveries.acked,
        acked_as_duplicate: counts.acked_as_duplicate,
        unacked: counts.sent.saturating_sub(deliveries.acked + refused),
        refused,
        refused_by_code: counts.refused_by_code,
        expected_deliveries: deliveries.expected,
        received: deliveries.received,
        lost: deliveries.lost,
        duplicates: deliveries.duplicates,
        out_of_order: deliveries.out_of_order,
        rooms_listed_wrong: measured.rooms_listed_wrong,
        room_list_examples: measured.room_list_examples,
        drain_secs: measured.drain_secs,
    };
    (results, back.recovery)
}

/// PresenceChanges received after the kill.
struct Presence<'a> {
    /// About the killed gateway's members (LEFT/JOINED flicker).
    flicker: u64,
    /// About anybody else (the final check's newcomers aside), and a few of them.
    other: u64,
    other_examples: Vec<String>,
    /// The killed gateway's members somebody saw leave (or join again).
    seen_leaving: BTreeSet<&'a str>,
}

/// Sorts the presence after the kill: about the killed gateway's members
/// (`hit`) it is flicker; the final check's newcomers (`checker`) are nobody's.
fn presence<'a>(
    by_index: &BTreeMap<usize, &Outcome>,
    hit: &BTreeSet<&'a str>,
    checker: &str,
) -> Presence<'a> {
    let mut presence = Presence {
        flicker: 0,
        other: 0,
        other_examples: Vec::new(),
        seen_leaving: BTreeSet::new(),
    };
    for outcome in by_index.values() {
        for (room, name, left) in &outcome.presence_after_kill {
            if let Some(hit) = hit.get(name.as_str()) {
                presence.flicker += 1;
                presence.seen_leaving.insert(*hit);
            } else if !name.starts_with(checker) {
                presence.other += 1;
                if presence.other_examples.len() < 3 {
                    let kind = if *left { "LEFT" } else { "JOINED" };
                    presence
                        .other_examples
                        .push(format!("{name} {kind} in {room}"));
                }
            }
        }
    }
    presence
}

/// How the killed gateway's members came back (times in nanoseconds).
struct Recoveries {
    /// Back in all their rooms, and of those back by token.
    resumed: u64,
    by_token: u64,
    /// From the loss to back, from the kill to back, from the kill to the loss.
    recovery: Histogram<u64>,
    from_kill: Histogram<u64>,
    seen: Histogram<u64>,
    /// Connect, Hello, re-joins of the attempt that brought each one back.
    phases: [Histogram<u64>; 3],
    /// Members of the other gateways that lost their connection anyway.
    unexpected: u64,
}

/// The first resumption of each member of the `victim` gateway, timed from
/// its loss and from the kill; a member counts as back by token when no
/// Hello met USERNAME_TAKEN and nobody saw it leave (`seen_leaving`).
fn recoveries(
    by_index: &BTreeMap<usize, &Outcome>,
    names: &[String],
    victim: &str,
    kill_at: Instant,
    seen_leaving: &BTreeSet<&str>,
) -> Recoveries {
    let mut back = Recoveries {
        resumed: 0,
        by_token: 0,
        recovery: new_histogram(),
        from_kill: new_histogram(),
        seen: new_histogram(),
        phases: [new_histogram(), new_histogram(), new_histogram()],
        unexpected: 0,
    };
    for (index, outcome) in by_index {
        if outcome.gateway != victim {
            back.unexpected += u64::from(outcome.disconnects > 0);
            continue;
        }
        let Some(first) = outcome.resumptions.first() else {
            continue;
        };
        back.resumed += 1;
        back.by_token += u64::from(
            first.name_taken == 0
                && first.with_token
                && !seen_leaving.contains(names[*index].as_str()),
        );
        back.recovery
            .saturating_record(first.downtime.as_nanos().max(1) as u64);
        let p = &first.phases;
        for (hist, took) in back.phases.iter_mut().zip([p.connect, p.hello, p.rejoin]) {
            hist.saturating_record(took.as_nanos().max(1) as u64);
        }
        let lost = first.lost_at.into_std();
        let came_back = lost + first.downtime;
        back.from_kill.saturating_record(
            came_back
                .saturating_duration_since(kill_at)
                .as_nanos()
                .max(1) as u64,
        );
        back.seen
            .saturating_record(lost.saturating_duration_since(kill_at).as_nanos().max(1) as u64);
    }
    back
}

/// What every member's reconnects, ends, refusals and sends add up to.
struct Counts {
    /// Most reconnect attempts one member needed, and Hellos answered USERNAME_TAKEN.
    max_attempts: u32,
    name_taken: u64,
    ended_reasons: BTreeMap<String, u64>,
    refused_by_code: BTreeMap<String, u64>,
    sent: u64,
    acked_as_duplicate: u64,
}

fn counts(by_index: &BTreeMap<usize, &Outcome>) -> Counts {
    let mut counts = Counts {
        max_attempts: 0,
        name_taken: 0,
        ended_reasons: BTreeMap::new(),
        refused_by_code: BTreeMap::new(),
        sent: 0,
        acked_as_duplicate: 0,
    };
    for outcome in by_index.values() {
        for r in &outcome.resumptions {
            counts.max_attempts = counts.max_attempts.max(r.attempts);
            counts.name_taken += u64::from(r.name_taken);
        }
        if let Some(reason) = &outcome.ended {
            *counts
                .ended_reasons
                .entry(format!("{reason:?}"))
                .or_default() += 1;
        }
        for (code, n) in &outcome.refused {
            *counts.refused_by_code.entry(code.clone()).or_default() += n;
        }
        counts.sent += outcome.sent;
        counts.acked_as_duplicate += outcome.acked_as_duplicate;
    }
    counts
}

/// What became of the acknowledged messages, over every member of their rooms.
#[derive(Debug, Default, PartialEq)]
struct Deliveries {
    /// Acknowledged messages.
    acked: u64,
    /// Acked messages x members of their room.
    expected: u64,
    /// Deliveries of acked messages (replays included, duplicates not).
    received: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
}

/// Every acked message, by room; then what each member of the room got.
fn deliveries(
    by_index: &BTreeMap<usize, &Outcome>,
    room_members: &[(String, Vec<usize>)],
) -> Deliveries {
    let mut acked_ids: BTreeMap<&str, BTreeSet<MessageId>> = BTreeMap::new();
    let mut d = Deliveries::default();
    for outcome in by_index.values() {
        for (room, id) in &outcome.acked {
            d.acked += 1;
            acked_ids.entry(room.as_str()).or_default().insert(*id);
        }
    }
    for (room, members) in room_members {
        let empty = BTreeSet::new();
        let expected = acked_ids.get(room.as_str()).unwrap_or(&empty);
        for index in members {
            d.expected += expected.len() as u64;
            let Some(outcome) = by_index.get(index) else {
                d.lost += expected.len() as u64;
                continue;
            };
            let got = outcome.received.get(room).map_or(&[][..], Vec::as_slice);
            let mut seen = BTreeSet::new();
            let mut last: Option<MessageId> = None;
            for id in got {
                if !seen.insert(*id) {
                    d.duplicates += 1;
                } else if last.is_some_and(|last| *id < last) {
                    d.out_of_order += 1;
                }
                last = last.max(Some(*id));
            }
            let delivered = expected.intersection(&seen).count() as u64;
            d.received += delivered;
            d.lost += expected.len() as u64 - delivered;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_count_lost_duplicate_and_out_of_order_receipts() {
        let id = |ms| MessageId::new(ms, 0);
        let sender = Outcome {
            acked: vec![
                ("r".into(), id(1)),
                ("r".into(), id(2)),
                ("r".into(), id(3)),
            ],
            received: BTreeMap::from([("r".into(), vec![id(1), id(2), id(3)])]),
            ..Outcome::default()
        };
        // 3 never arrived, 1 came after 2, 2 came twice.
        let other = Outcome {
            received: BTreeMap::from([("r".into(), vec![id(2), id(1), id(2)])]),
            ..Outcome::default()
        };
        let by_index = BTreeMap::from([(0, &sender), (1, &other)]);
        // Member 2 left no outcome: everything is lost for it.
        let got = deliveries(&by_index, &[("r".into(), vec![0, 1, 2])]);
        let want = Deliveries {
            acked: 3,
            expected: 9,
            received: 5,
            lost: 4,
            duplicates: 1,
            out_of_order: 1,
        };
        assert_eq!(got, want);
    }

    #[test]
    fn presence_about_the_killed_gateways_members_is_flicker() {
        let seen = Outcome {
            presence_after_kill: vec![
                ("r".into(), "hit-1".into(), true),
                ("r".into(), "hit-1".into(), false),
                ("r".into(), "check-0".into(), false),
                ("r".into(), "calm".into(), true),
            ],
            ..Outcome::default()
        };
        let by_index = BTreeMap::from([(0, &seen)]);
        let hit = BTreeSet::from(["hit-1"]);
        let presence = presence(&by_index, &hit, "check");
        assert_eq!((presence.flicker, presence.other), (2, 1));
        assert_eq!(presence.other_examples, ["calm LEFT in r"]);
        assert_eq!(presence.seen_leaving, BTreeSet::from(["hit-1"]));
    }
}
