//! `chat-admin`: the operator CLI. Parses flags, calls the admin gRPC API of
//! one gateway, prints a table (or JSON), and exits non-zero with one clear
//! line when something fails.

mod bans;
mod bearer;
mod cli;
mod connection;
mod output;
mod tls;
mod token;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use chat_admin_proto::{
    DrainGatewayRequest, KickUserRequest, ListGatewaysRequest, ListRoomsRequest, ListUsersRequest,
    SendSystemMessageRequest,
};
use chat_proto::rules::now_ms;
use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::connection::{call_failed, connect, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chat-admin: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(text) => {
            // A closed pipe (`chat-admin users | head`) is not worth a panic.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("chat-admin: {failure}");
            ExitCode::from(failure.code)
        }
    }
}

/// Runs the subcommand and returns what to print.
async fn run(cli: Cli) -> Result<String, Failure> {
    if let Command::Token { .. } = cli.command {
        return mint(cli.command);
    }
    let timeout = Duration::from_secs(cli.timeout_secs.max(1));
    let token = bearer::resolve(cli.token, cli.token_file.as_deref())?;
    let tls = cli.tls.client_config(&cli.server)?;
    let mut client = connect(&cli.server, token.as_deref(), tls, timeout).await?;
    let server = cli.server.as_str();
    let failed = |status: tonic::Status| call_failed(server, &status);
    let json = cli.json;
    Ok(match cli.command {
        Command::Rooms => {
            let rooms = client
                .list_rooms(ListRoomsRequest {})
                .await
                .map_err(failed)?
                .into_inner()
                .rooms;
            output::rooms(&rooms, json)
        }
        Command::Users { room } => {
            let request = ListUsersRequest {
                room: room.unwrap_or_default(),
            };
            let users = client
                .list_users(request)
                .await
                .map_err(failed)?
                .into_inner()
                .users;
            output::users(&users, json)
        }
        Command::Gateways => {
            let gateways = client
                .list_gateways(ListGatewaysRequest {})
                .await
                .map_err(failed)?
                .into_inner()
                .gateways;
            output::gateways(&gateways, now_ms(), json)
        }
        Command::Kick { user, room, reason } => {
            let request = KickUserRequest {
                username: user.clone(),
                room: room.clone().unwrap_or_default(),
                reason,
            };
            let kicked = client
                .kick_user(request)
                .await
                .map_err(failed)?
                .into_inner()
                .sessions_kicked;
            output::kicked(&user, room.as_deref(), kicked, json)
        }
        Command::Say { room, text } => {
            let request = SendSystemMessageRequest {
                room: room.clone(),
                text,
            };
            let id = client
                .send_system_message(request)
                .await
                .map_err(failed)?
                .into_inner()
                .id;
            output::said(&room, &id, json)
        }
        Command::Drain { gateway_id } => {
            let request = DrainGatewayRequest {
                gateway_id: gateway_id.clone(),
            };
            let connections = client
                .drain_gateway(request)
                .await
                .map_err(failed)?
                .into_inner()
                .connections;
            output::drained(&gateway_id, connections, json)
        }
        Command::Token { .. } => unreachable!("answered before connecting"),
        Command::Ban(args) => bans::ban(&mut client, server, args, json).await?,
        Command::Unban { user } => bans::unban(&mut client, server, &user, json).await?,
        Command::Bans => bans::bans(&mut client, server, json).await?,
    })
}

/// `chat-admin token`: the JWT, one line.
fn mint(command: Command) -> Result<String, Failure> {
    let Command::Token {
        secret_file,
        sub,
        name,
        ttl,
        rooms,
        audience,
        issuer,
    } = command
    else {
        unreachable!("called for token only");
    };
    let usage = |message: String| Failure {
        code: connection::exit::USAGE,
        message,
    };
    let ttl = cli::parse_duration(&ttl).map_err(|e| usage(format!("--ttl: {e}")))?;
    let now = now_ms() / 1000;
    let claims = token::Claims {
        sub,
        name,
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs(),
        rooms,
        aud: audience,
        iss: issuer,
    };
    token::mint(&secret_file, &claims)
        .map(|jwt| format!("{jwt}\n"))
        .map_err(usage)
}
