//! Command-line flags and subcommands (one clap struct; every global flag
//! also has a `CHAT_ADMIN_*` environment variable).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Operate a chat cluster through the admin gRPC API of any of its gateways.
///
/// Answers describe the whole cluster, whichever gateway is asked.
#[derive(Debug, Parser)]
#[command(name = "chat-admin", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Admin API of a gateway (its --admin-listen address).
    #[arg(
        long,
        global = true,
        env = "CHAT_ADMIN_SERVER",
        default_value = "http://127.0.0.1:9090"
    )]
    pub server: String,

    /// Bearer token, when the gateways run with --admin-token.
    #[arg(long, global = true, env = "CHAT_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// File holding the bearer token (a trailing newline is ignored), so
    /// that it shows in no process listing.
    #[arg(
        long,
        global = true,
        env = "CHAT_ADMIN_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub token_file: Option<std::path::PathBuf>,

    /// Print JSON (one document) instead of a table, for scripts.
    #[arg(long, global = true, env = "CHAT_ADMIN_JSON")]
    pub json: bool,

    /// Seconds to wait for the connection and for each answer.
    #[arg(
        long,
        global = true,
        env = "CHAT_ADMIN_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub timeout_secs: u64,

    /// TLS to an https:// --server.
    #[command(flatten)]
    pub tls: crate::tls::TlsFlags,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Rooms with members, or with a message in the last 24 hours.
    Rooms,
    /// Users online, with their rooms and gateways.
    Users {
        /// Only users in this room.
        #[arg(long)]
        room: Option<String>,
    },
    /// Live gateways and their load.
    Gateways,
    /// Disconnect a user (Error KICKED, close 4001), or with --room only remove them from that room.
    Kick {
        /// Username (case-insensitive).
        user: String,
        /// Only remove the user from this room; they stay connected.
        #[arg(long)]
        room: Option<String>,
        /// Shown to the user (in the KICKED error).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Post a system message into a room's ordered history.
    Say { room: String, text: String },
    /// Drain a gateway as SIGTERM does: its clients reconnect elsewhere, then it exits.
    Drain {
        /// The gateway's id (see `chat-admin gateways`).
        gateway_id: String,
    },
    /// Print an HS256 JWT for a client's Hello.token (development and
    /// tests), signed with the gateways' --auth-jwt-secret-file. Asks no gateway.
    Token {
        /// File holding the HS256 secret (the gateways' --auth-jwt-secret-file).
        #[arg(long, env = "CHAT_ADMIN_SECRET_FILE")]
        secret_file: std::path::PathBuf,
        /// The identity (`sub`).
        #[arg(long)]
        sub: String,
        /// The display name (`name`; default: the sub).
        #[arg(long)]
        name: Option<String>,
        /// How long the token is valid: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The only rooms it may join (`rooms`; a trailing * matches a prefix).
        #[arg(long, value_delimiter = ',')]
        rooms: Option<Vec<String>>,
        /// The audience (`aud`), when the gateways require one.
        #[arg(long, env = "CHAT_ADMIN_TOKEN_AUDIENCE")]
        audience: Option<String>,
        /// The issuer (`iss`), when the gateways require one.
        #[arg(long, env = "CHAT_ADMIN_TOKEN_ISSUER")]
        issuer: Option<String>,
    },
    /// Ban a user: kicked everywhere (Error KICKED, close 4001), and refused at Hello until the ban ends.
    Ban(BanArgs),
    /// Lift a user's ban.
    Unban {
        /// Username (case-insensitive).
        user: String,
    },
    /// The bans that hold now.
    Bans,
}

/// `chat-admin ban USER [--for DURATION] [--reason TEXT] [--by NAME]`.
#[derive(Debug, Args)]
pub(crate) struct BanArgs {
    /// Username (case-insensitive); with signed identities, the token's `sub`.
    pub user: String,
    /// How long: `90s`, `30m`, `1h`, `7d`, or seconds; without it, until `chat-admin unban`.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Shown to the user (in the KICKED error) and in `chat-admin bans`.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Who bans, shown in `chat-admin bans` [default: $USER].
    #[arg(long)]
    pub by: Option<String>,
}

/// `90s`, `30m`, `1h`, `7d`, or plain seconds; at least one second (`ban
/// --for` and `token --ttl`).
pub(crate) fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => raw.split_at(at),
        None => (raw, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 90s, 30m, 1h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err(format!("{raw:?}: a duration is at least 1s")),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("{raw:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "chat-admin",
            "users",
            "--room",
            "lobby",
            "--json",
            "--server",
            "http://h:1",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.server, "http://h:1");
        assert!(matches!(cli.command, Command::Users { room: Some(ref r) } if r == "lobby"));
        let cli = Cli::try_parse_from([
            "chat-admin",
            "--token",
            "t",
            "kick",
            "Ann",
            "--reason",
            "spam",
        ])
        .unwrap();
        assert_eq!(cli.token.as_deref(), Some("t"));
        assert!(
            matches!(cli.command, Command::Kick { ref user, room: None, ref reason } if user == "Ann" && reason == "spam")
        );
    }

    #[test]
    fn token_takes_its_claims() {
        let cli = Cli::try_parse_from([
            "chat-admin",
            "token",
            "--secret-file",
            "/s",
            "--sub",
            "alice",
            "--name",
            "Alice",
            "--ttl",
            "30m",
            "--rooms",
            "a,b*",
        ])
        .unwrap();
        let Command::Token {
            sub,
            name,
            ttl,
            rooms,
            ..
        } = cli.command
        else {
            panic!("not token");
        };
        assert_eq!(
            (sub.as_str(), name.as_deref(), ttl.as_str()),
            ("alice", Some("Alice"), "30m")
        );
        assert_eq!(rooms, Some(vec!["a".to_owned(), "b*".to_owned()]));
        assert!(Cli::try_parse_from(["chat-admin", "token", "--sub", "a"]).is_err());
    }

    #[test]
    fn ban_takes_a_duration_and_a_reason() {
        let cli = Cli::try_parse_from([
            "chat-admin",
            "ban",
            "Ann",
            "--for",
            "1h",
            "--reason",
            "spam",
        ])
        .unwrap();
        let Command::Ban(args) = cli.command else {
            panic!("not a ban: {:?}", cli.command);
        };
        assert_eq!(args.user, "Ann");
        assert_eq!(args.duration, Some(Duration::from_secs(3600)));
        assert_eq!(args.reason, "spam");
        let cli = Cli::try_parse_from(["chat-admin", "ban", "Ann"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Ban(BanArgs { duration: None, .. })
        ));
        for bad in ["0", "1w", "h", "-1s"] {
            assert!(
                Cli::try_parse_from(["chat-admin", "ban", "Ann", "--for", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(parse_duration("90").is_ok() && parse_duration("7d").is_ok());
        assert!(matches!(
            Cli::try_parse_from(["chat-admin", "unban", "Ann"]).unwrap().command,
            Command::Unban { ref user } if user == "Ann"
        ));
        assert!(matches!(
            Cli::try_parse_from(["chat-admin", "bans"]).unwrap().command,
            Command::Bans
        ));
    }

    #[test]
    fn say_takes_room_and_text() {
        let cli =
            Cli::try_parse_from(["chat-admin", "say", "lobby", "maintenance at noon"]).unwrap();
        assert!(
            matches!(cli.command, Command::Say { ref room, ref text } if room == "lobby" && text == "maintenance at noon")
        );
        assert!(Cli::try_parse_from(["chat-admin", "say", "lobby"]).is_err());
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "0s", "1w", "h", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
