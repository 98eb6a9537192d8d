//! `chat-admin ban`, `unban` and `bans`: the calls and what they print.

use chat_admin_proto::{Ban, BanUserRequest, ListBansRequest, UnbanUserRequest};
use chat_proto::rules::now_ms;
use serde::Serialize;

use crate::cli::BanArgs;
use crate::connection::{call_failed, AdminClient, Failure};
use crate::output::{json, utc, Table};

/// `ban`: records the ban and kicks the user everywhere.
pub(crate) async fn ban(
    client: &mut AdminClient,
    server: &str,
    args: BanArgs,
    as_json: bool,
) -> Result<String, Failure> {
    let request = BanUserRequest {
        username: args.user.clone(),
        duration_ms: args.duration.map_or(0, |d| d.as_millis() as u64),
        reason: args.reason,
        banned_by: args
            .by
            .unwrap_or_else(|| std::env::var("USER").unwrap_or_default()),
    };
    let answer = client
        .ban_user(request)
        .await
        .map_err(|status| call_failed(server, &status))?
        .into_inner();
    Ok(banned(
        &args.user,
        answer.until_ms,
        answer.sessions_kicked,
        as_json,
    ))
}

/// `unban`.
pub(crate) async fn unban(
    client: &mut AdminClient,
    server: &str,
    user: &str,
    as_json: bool,
) -> Result<String, Failure> {
    let request = UnbanUserRequest {
        username: user.to_owned(),
    };
    let was_banned = client
        .unban_user(request)
        .await
        .map_err(|status| call_failed(server, &status))?
        .into_inner()
        .was_banned;
    Ok(unbanned(user, was_banned, as_json))
}

/// `bans`.
pub(crate) async fn bans(
    client: &mut AdminClient,
    server: &str,
    as_json: bool,
) -> Result<String, Failure> {
    let bans = client
        .list_bans(ListBansRequest {})
        .await
        .map_err(|status| call_failed(server, &status))?
        .into_inner()
        .bans;
    Ok(list(&bans, now_ms(), as_json))
}

fn banned(user: &str, until_ms: u64, sessions: u32, as_json: bool) -> String {
    if as_json {
        return json(&serde_json::json!({ "sessions_kicked": sessions, "until_ms": until_ms }));
    }
    let until = if until_ms == 0 {
        "until unbanned".to_owned()
    } else {
        format!("until {}", utc(until_ms))
    };
    let s = if sessions == 1 { "" } else { "s" };
    format!("banned {user} {until}: {sessions} session{s} closed\n")
}

fn unbanned(user: &str, was_banned: bool, as_json: bool) -> String {
    if as_json {
        return json(&serde_json::json!({ "was_banned": was_banned }));
    }
    if was_banned {
        format!("unbanned {user}\n")
    } else {
        format!("{user} was not banned\n")
    }
}

#[derive(Serialize)]
struct BanJson<'a> {
    user: &'a str,
    reason: &'a str,
    banned_by: &'a str,
    banned_at_ms: u64,
    until_ms: u64,
}

fn list(bans: &[Ban], now_ms: u64, as_json: bool) -> String {
    if as_json {
        let bans: Vec<BanJson<'_>> = bans
            .iter()
            .map(|b| BanJson {
                user: &b.user,
                reason: &b.reason,
                banned_by: &b.banned_by,
                banned_at_ms: b.banned_at_ms,
                until_ms: b.until_ms,
            })
            .collect();
        return json(&serde_json::json!({ "bans": bans }));
    }
    let mut table = Table::new(vec!["USER", "UNTIL", "LEFT", "BY", "REASON"]);
    for b in bans {
        let (until, left) = if b.until_ms == 0 {
            ("-".to_owned(), "until unbanned".to_owned())
        } else {
            (
                utc(b.until_ms),
                remaining(b.until_ms.saturating_sub(now_ms)),
            )
        };
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        table.row(vec![
            b.user.clone(),
            until,
            left,
            or_dash(&b.banned_by),
            or_dash(&b.reason),
        ]);
    }
    table.render()
}

/// "45s", "12m", "3h", "2d".
fn remaining(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_messages_and_the_list() {
        assert_eq!(
            banned("Ann", 0, 1, false),
            "banned Ann until unbanned: 1 session closed\n"
        );
        assert!(banned("Ann", 86_400_000, 0, false).starts_with("banned Ann until 1970-01-02"));
        assert_eq!(unbanned("Ann", false, false), "Ann was not banned\n");
        let bans = [Ban {
            user: "ann".into(),
            reason: "spam".into(),
            banned_by: String::new(),
            banned_at_ms: 1,
            until_ms: 3_600_000,
        }];
        let text = list(&bans, 0, false);
        assert!(text.starts_with("USER  UNTIL"), "{text}");
        assert!(
            text.contains("ann   1970-01-01 01:00:00Z  1h    -   spam"),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&list(&bans, 0, true)).unwrap();
        assert_eq!(value["bans"][0]["until_ms"], 3_600_000);
    }
}
