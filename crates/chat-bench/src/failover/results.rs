//! The results of `chat-bench failover`, flattened into its report, and
//! their rows in the table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::latency::LatencySummary;
use crate::report::{fmt_int, Results};

/// Percentiles of a duration, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Millis {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Millis {
    pub(super) fn of(summary: &LatencySummary) -> Self {
        Self {
            count: summary.count,
            p50_ms: summary.p50_us / 1_000.0,
            p99_ms: summary.p99_us / 1_000.0,
            max_ms: summary.max_us / 1_000.0,
        }
    }

    fn show(&self) -> String {
        if self.count == 0 {
            return "none".into();
        }
        format!(
            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// The results of a failover run (flattened into the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FailoverResults {
    pub members: usize,
    pub rooms: usize,
    pub members_per_room: usize,
    pub setup_secs: f64,
    /// The gateway that was killed, and whether it was restarted.
    pub killed_gateway: String,
    pub restarted: bool,
    /// How long the restarted gateway took to print its address again.
    pub restart_secs: Option<f64>,
    /// Members whose connection was on the killed gateway.
    pub on_killed_gateway: u64,
    /// Of those: back in all their rooms; back by token (the token gave the
    /// name back: no USERNAME_TAKEN on the way, and nobody saw them leave,
    /// so the name never fell free in between); never back.
    pub resumed: u64,
    pub resumed_by_token: u64,
    pub locked_out: u64,
    /// Of those, how many somebody saw leave (or join again) after the kill.
    pub seen_leaving: u64,
    /// From each one's connection loss to back in all rooms.
    pub recovery: Millis,
    /// From the kill to back in all rooms (adds how long the loss took to show).
    pub recovery_from_kill: Millis,
    /// From the kill to each one's connection loss showing (chat-lb closing it).
    pub loss_seen_after_kill: Millis,
    /// The steps of the attempt that brought each one back: connect (TCP
    /// and WebSocket upgrade through chat-lb), Hello to Welcome, re-joins.
    pub connect: Millis,
    pub hello: Millis,
    pub rejoin: Millis,
    /// Most reconnect attempts one member needed.
    pub max_attempts: u32,
    /// Hellos answered USERNAME_TAKEN, over all members.
    pub name_taken: u64,
    /// PresenceChanges about the killed gateway's members that others
    /// received after the kill (LEFT/JOINED flicker), in all.
    pub presence_flicker: u64,
    /// Other PresenceChanges received after the kill (the final check's
    /// newcomers aside), and a few of them.
    pub presence_other: u64,
    pub presence_other_examples: Vec<String>,
    /// Members not on the killed gateway that lost their connection anyway.
    pub unexpected_disconnects: u64,
    /// Members that stopped for good (replaced, kicked, refused).
    pub ended: u64,
    pub ended_reasons: BTreeMap<String, u64>,
    pub sent: u64,
    pub acked: u64,
    /// Acks of re-sends that the server had already accepted (no second copy).
    pub acked_as_duplicate: u64,
    /// Sends still unacknowledged at the end.
    pub unacked: u64,
    pub refused: u64,
    pub refused_by_code: BTreeMap<String, u64>,
    /// Acked messages x members of their room.
    pub expected_deliveries: u64,
    /// Deliveries of acked messages (replays included, duplicates not).
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Rooms whose member list (asked by a newcomer at the end) was not
    /// exactly their connected members; a few examples.
    pub rooms_listed_wrong: u64,
    pub room_list_examples: Vec<String>,
    pub drain_secs: f64,
}

impl Results for FailoverResults {
    fn clean(&self) -> bool {
        self.on_killed_gateway > 0
            && self.resumed == self.on_killed_gateway
            && self.resumed_by_token == self.on_killed_gateway
            && self.locked_out == 0
            && self.presence_flicker == 0
            && self.seen_leaving == 0
            && self.unexpected_disconnects == 0
            && self.ended == 0
            && self.unacked == 0
            && self.refused == 0
            && self.received > 0
            && self.lost == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.rooms_listed_wrong == 0
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = self.recovery_rows();
        for (reason, n) in &self.ended_reasons {
            rows.push((format!("  {reason}"), fmt_int(*n)));
        }
        rows.extend(self.message_rows());
        for (code, n) in &self.refused_by_code {
            rows.push((format!("  refused {code}"), fmt_int(*n)));
        }
        for example in &self.room_list_examples {
            rows.push(("  e.g.".into(), example.clone()));
        }
        for example in &self.presence_other_examples {
            rows.push(("  other presence e.g.".into(), example.clone()));
        }
        rows
    }
}

impl FailoverResults {
    /// The rows about the members and the kill: who came back, how fast,
    /// the presence flicker, who was disconnected or ended.
    fn recovery_rows(&self) -> Vec<(String, String)> {
        vec![
            (
                "members".into(),
                format!(
                    "{} in {} rooms of {} (set-up {:.1} s)",
                    fmt_int(self.members as u64),
                    self.rooms,
                    self.members_per_room,
                    self.setup_secs
                ),
            ),
            (
                "killed".into(),
                match self.restart_secs {
                    Some(secs) => format!("{}, restarted ({secs:.2} s)", self.killed_gateway),
                    None => format!("{}, not restarted", self.killed_gateway),
                },
            ),
            (
                "on the killed gateway".into(),
                fmt_int(self.on_killed_gateway),
            ),
            (
                "  back in all rooms".into(),
                format!(
                    "{} ({} with their name by token, {} locked out)",
                    fmt_int(self.resumed),
                    fmt_int(self.resumed_by_token),
                    fmt_int(self.locked_out)
                ),
            ),
            ("  loss -> back".into(), self.recovery.show()),
            ("  kill -> back".into(), self.recovery_from_kill.show()),
            (
                "  kill -> loss seen".into(),
                self.loss_seen_after_kill.show(),
            ),
            ("  connect".into(), self.connect.show()),
            ("  Hello -> Welcome".into(), self.hello.show()),
            ("  re-joins".into(), self.rejoin.show()),
            (
                "  attempts".into(),
                format!(
                    "at most {}, {} USERNAME_TAKEN",
                    self.max_attempts,
                    fmt_int(self.name_taken)
                ),
            ),
            (
                "presence flicker".into(),
                format!(
                    "{} about {} members (other presence changes: {})",
                    fmt_int(self.presence_flicker),
                    fmt_int(self.seen_leaving),
                    fmt_int(self.presence_other)
                ),
            ),
            (
                "unexpected disconnects".into(),
                fmt_int(self.unexpected_disconnects),
            ),
            ("ended for good".into(), fmt_int(self.ended)),
        ]
    }

    /// The rows about the messages: sends, acks and deliveries, and the room lists.
    fn message_rows(&self) -> Vec<(String, String)> {
        vec![
            (
                "sent".into(),
                format!(
                    "{} ({} acked, {} of them as duplicates; {} unacked, {} refused)",
                    fmt_int(self.sent),
                    fmt_int(self.acked),
                    fmt_int(self.acked_as_duplicate),
                    fmt_int(self.unacked),
                    fmt_int(self.refused)
                ),
            ),
            (
                "deliveries".into(),
                format!(
                    "{} of {} expected",
                    fmt_int(self.received),
                    fmt_int(self.expected_deliveries)
                ),
            ),
            ("lost".into(), fmt_int(self.lost)),
            ("duplicates".into(), fmt_int(self.duplicates)),
            ("out of order".into(), fmt_int(self.out_of_order)),
            (
                "rooms listed wrong".into(),
                fmt_int(self.rooms_listed_wrong),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::new_histogram;

    #[test]
    fn millis_show_percentiles_or_none() {
        assert_eq!(Millis::default().show(), "none");
        let mut hist = new_histogram();
        for ms in [100u64, 200, 300] {
            hist.record(ms * 1_000_000).unwrap();
        }
        let m = Millis::of(&LatencySummary::from_histogram(&hist));
        assert_eq!(m.count, 3);
        assert!((m.max_ms - 300.0).abs() < 1.0, "{m:?}");
        assert!(m.show().starts_with("p50 200 ms"), "{}", m.show());
    }
}
