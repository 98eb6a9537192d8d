//! Command-line flags and subcommands (one clap struct; every global flag
//! also has a `CHAT_ADMIN_*` environment variable).

use clap::{Parser, Subcommand};

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
    fn say_takes_room_and_text() {
        let cli =
            Cli::try_parse_from(["chat-admin", "say", "lobby", "maintenance at noon"]).unwrap();
        assert!(
            matches!(cli.command, Command::Say { ref room, ref text } if room == "lobby" && text == "maintenance at noon")
        );
        assert!(Cli::try_parse_from(["chat-admin", "say", "lobby"]).is_err());
    }
}
