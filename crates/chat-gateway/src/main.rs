//! `chat-gateway`: parses flags, starts logging, binds, and runs the gateway.

use std::process::ExitCode;

use anyhow::Context as _;
use chat_gateway::{Config, LogFormat};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

/// mimalloc keeps freed pages for reuse where glibc's malloc gave heap tops
/// back and faulted them in again (zeroed) on the next burst of connections.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for invalid configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit code when another live process serves this gateway id (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let mut config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's first line says what is wrong; its usage lines follow.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            eprintln!(
                "chat-gateway: invalid configuration: {}",
                line.trim_start_matches("error: ")
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(problem) = config
        .load_secrets()
        .and_then(|()| config.validate())
        .and_then(|()| chat_gateway::check_tls_files(&config))
    {
        eprintln!("chat-gateway: invalid configuration: {problem}");
        return ExitCode::from(EXIT_USAGE);
    }
    init_tracing(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let result = runtime
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(serve(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("chat-gateway: {e:#}");
            match e.downcast_ref::<chat_gateway::Error>() {
                Some(chat_gateway::Error::Bridge(chat_bridge::BridgeError::GatewayIdInUse {
                    ..
                })) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = chat_net::bind_listener(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| {
            format!(
                "binding the admin address {} (--admin-listen)",
                config.admin_listen
            )
        })?;
    let admin_addr = admin.local_addr()?;
    let addr = listener.local_addr()?;
    if config.admin_token.is_none() && !admin_addr.ip().is_loopback() {
        tracing::warn!(%admin_addr, "the admin api is reachable from other hosts without a token: set --admin-token");
    }
    // Machine-readable lines for scripts and tests that asked for port 0,
    // printed once the gateway really serves (a closed stdout is ignored).
    let scheme = |tls: bool| if tls { "https" } else { "http" };
    let (web, admin_scheme) = (
        scheme(config.tls.tls_cert.is_some()),
        scheme(config.tls.admin_tls_cert.is_some()),
    );
    let ready = move || {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "chat-gateway listening on {web}://{addr}");
        let _ = writeln!(
            out,
            "chat-gateway admin listening on {admin_scheme}://{admin_addr}"
        );
        let _ = out.flush();
    };
    chat_gateway::run(listener, Some(admin), config, ready, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
