//! What each subcommand prints: an aligned table for people, or one JSON
//! document for scripts (field names as in `admin.proto`, numbers as numbers).

use chat_admin_proto::{Gateway, Room, User};
use serde::Serialize;

/// Left-aligned columns separated by two spaces; the header in capitals.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[derive(Serialize)]
struct RoomJson<'a> {
    name: &'a str,
    member_count: u32,
    last_message_id: &'a str,
    last_message_at_ms: u64,
}

#[derive(Serialize)]
struct UserJson<'a> {
    username: &'a str,
    rooms: &'a [String],
    gateway_ids: &'a [String],
    connections: u32,
}

#[derive(Serialize)]
struct GatewayJson<'a> {
    id: &'a str,
    address: &'a str,
    connections: u32,
    started_at_ms: u64,
    last_heartbeat_ms: u64,
    draining: bool,
}

#[derive(Serialize)]
struct RoomList<'a> {
    rooms: Vec<RoomJson<'a>>,
}

#[derive(Serialize)]
struct UserList<'a> {
    users: Vec<UserJson<'a>>,
}

#[derive(Serialize)]
struct GatewayList<'a> {
    gateways: Vec<GatewayJson<'a>>,
}

pub(crate) fn json(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("plain data serialises");
    text.push('\n');
    text
}

pub(crate) fn rooms(rooms: &[Room], as_json: bool) -> String {
    if as_json {
        let rooms: Vec<RoomJson<'_>> = rooms
            .iter()
            .map(|r| RoomJson {
                name: &r.name,
                member_count: r.member_count,
                last_message_id: &r.last_message_id,
                last_message_at_ms: r.last_message_at_ms,
            })
            .collect();
        return json(&RoomList { rooms });
    }
    if rooms.is_empty() {
        return "no rooms\n".to_owned();
    }
    let mut table = Table::new(vec!["ROOM", "MEMBERS", "LAST MESSAGE", "LAST MESSAGE ID"]);
    for r in rooms {
        table.row(vec![
            r.name.clone(),
            r.member_count.to_string(),
            utc(r.last_message_at_ms),
            dash_if_empty(&r.last_message_id),
        ]);
    }
    table.render()
}

pub(crate) fn users(users: &[User], as_json: bool) -> String {
    if as_json {
        let users: Vec<UserJson<'_>> = users
            .iter()
            .map(|u| UserJson {
                username: &u.username,
                rooms: &u.rooms,
                gateway_ids: &u.gateway_ids,
                connections: u.connections,
            })
            .collect();
        return json(&UserList { users });
    }
    if users.is_empty() {
        return "no users online\n".to_owned();
    }
    let mut table = Table::new(vec!["USER", "CONNECTIONS", "GATEWAYS", "ROOMS"]);
    for u in users {
        table.row(vec![
            u.username.clone(),
            u.connections.to_string(),
            dash_if_empty(&u.gateway_ids.join(",")),
            dash_if_empty(&u.rooms.join(",")),
        ]);
    }
    table.render()
}

pub(crate) fn gateways(gateways: &[Gateway], now_ms: u64, as_json: bool) -> String {
    if as_json {
        let gateways: Vec<GatewayJson<'_>> = gateways
            .iter()
            .map(|g| GatewayJson {
                id: &g.id,
                address: &g.address,
                connections: g.connections,
                started_at_ms: g.started_at_ms,
                last_heartbeat_ms: g.last_heartbeat_ms,
                draining: g.draining,
            })
            .collect();
        return json(&GatewayList { gateways });
    }
    if gateways.is_empty() {
        return "no live gateways\n".to_owned();
    }
    let mut table = Table::new(vec![
        "GATEWAY",
        "ADDRESS",
        "CONNECTIONS",
        "STATE",
        "STARTED",
        "LAST HEARTBEAT",
    ]);
    for g in gateways {
        table.row(vec![
            g.id.clone(),
            dash_if_empty(&g.address),
            g.connections.to_string(),
            if g.draining { "draining" } else { "serving" }.to_owned(),
            utc(g.started_at_ms),
            ago(g.last_heartbeat_ms, now_ms),
        ]);
    }
    table.render()
}

pub(crate) fn kicked(user: &str, room: Option<&str>, sessions: u32, as_json: bool) -> String {
    if as_json {
        return json(&serde_json::json!({ "sessions_kicked": sessions }));
    }
    match (room, sessions) {
        (None, 0) => format!("{user} is not online: nobody was kicked\n"),
        (Some(room), 0) => format!("{user} is not in {room}: nobody was removed\n"),
        (None, n) => format!(
            "kicked {user}: {n} {} closed\n",
            plural(n, "session", "sessions")
        ),
        (Some(room), n) => format!(
            "removed {user} from {room}: {n} {}\n",
            plural(n, "session", "sessions")
        ),
    }
}

pub(crate) fn said(room: &str, id: &str, as_json: bool) -> String {
    if as_json {
        return json(&serde_json::json!({ "id": id }));
    }
    format!("posted to {room} as message {id}\n")
}

pub(crate) fn drained(gateway_id: &str, connections: u32, as_json: bool) -> String {
    if as_json {
        return json(&serde_json::json!({ "gateway_id": gateway_id, "connections": connections }));
    }
    format!(
        "gateway {gateway_id} is draining: {connections} {} told to reconnect\n",
        plural(connections, "connection", "connections")
    )
}

fn plural(n: u32, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// "2024-05-06 07:08:09Z" (UTC, second precision); "-" for 0.
pub(crate) fn utc(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// "3s ago", "5m ago", "2h ago"; "-" for 0.
pub(crate) fn ago(ms: u64, now_ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let secs = now_ms.saturating_sub(ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let mut table = Table::new(vec!["A", "LONG HEADER", "C"]);
        table.row(vec!["wider cell".into(), "x".into(), String::new()]);
        table.row(vec!["é".into(), "y".into(), "z".into()]);
        assert_eq!(
            table.render(),
            "A           LONG HEADER  C\nwider cell  x\né           y            z\n"
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20Z");
        assert_eq!(ago(10_000, 12_500), "2s ago");
        assert_eq!(ago(0, 12_500), "-");
        assert_eq!(ago(1, 7_200_001), "2h ago");
    }

    #[test]
    fn room_table_and_json() {
        let rooms = vec![
            Room {
                name: "lobby".into(),
                member_count: 2,
                last_message_id: "1700000000123-0".into(),
                last_message_at_ms: 1_700_000_000_123,
            },
            Room {
                name: "quiet".into(),
                member_count: 0,
                last_message_id: String::new(),
                last_message_at_ms: 0,
            },
        ];
        assert_eq!(
            rooms_table(&rooms),
            "ROOM   MEMBERS  LAST MESSAGE          LAST MESSAGE ID\n\
             lobby  2        2023-11-14 22:13:20Z  1700000000123-0\n\
             quiet  0        -                     -\n"
        );
        let value: serde_json::Value = serde_json::from_str(&super::rooms(&rooms, true)).unwrap();
        assert_eq!(value["rooms"][0]["member_count"], 2);
        assert_eq!(value["rooms"][1]["last_message_id"], "");
        assert_eq!(super::rooms(&[], false), "no rooms\n");
    }

    fn rooms_table(rooms: &[Room]) -> String {
        super::rooms(rooms, false)
    }

    #[test]
    fn messages_for_kick_say_and_drain() {
        assert_eq!(
            kicked("Ann", None, 1, false),
            "kicked Ann: 1 session closed\n"
        );
        assert_eq!(
            kicked("Ann", Some("lobby"), 2, false),
            "removed Ann from lobby: 2 sessions\n"
        );
        assert_eq!(
            kicked("Ann", None, 0, false),
            "Ann is not online: nobody was kicked\n"
        );
        assert_eq!(
            kicked("Ann", None, 0, true),
            "{\n  \"sessions_kicked\": 0\n}\n"
        );
        assert_eq!(
            drained("gw-1", 3, false),
            "gateway gw-1 is draining: 3 connections told to reconnect\n"
        );
        assert_eq!(
            said("lobby", "1-0", false),
            "posted to lobby as message 1-0\n"
        );
    }
}
