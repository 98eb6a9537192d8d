//! `run`: wires the pool, health checker, admin endpoint and accept loop together, and owns
//! the shutdown sequence.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{self, Config, ConfigError, FileConfig};
use crate::listener::Listener;
use crate::metrics::Stats;
use crate::pool::Pool;
use crate::shards::Shards;
use crate::signal::{Reload, Signals};
use crate::slot::Shared;
use crate::sources::Sources;
use crate::{admin, health, Error};

/// Balances connections accepted on `listener` over the configured backends and serves
/// `/metrics` and `/healthz` on `admin`, until `signals` asks for shutdown.
///
/// Shutdown: the listening socket is closed at once (new clients are refused), established
/// connections keep relaying until they end or `drain_timeout` passes, then the remaining ones
/// are closed and `run` returns `Ok`.
pub async fn run(
    listener: TcpListener,
    admin: TcpListener,
    config: Config,
    signals: Signals,
) -> Result<(), Error> {
    config.validate()?;
    info!(
        proxy = %listener.local_addr().map_err(Error::LocalAddr)?,
        admin = %admin.local_addr().map_err(Error::LocalAddr)?,
        backends = ?config.backends,
        "listening"
    );
    let pool = Arc::new(Pool::new(&config.backends));
    let stats = Arc::new(Stats::default());
    let Signals { shutdown, reload } = signals;

    let shared = Arc::new(Shared {
        pool: Arc::clone(&pool),
        stats: Arc::clone(&stats),
        connect_timeout: config.connect_timeout,
        health: config.health.clone(),
        send_proxy_v2: config.send_proxy_v2,
        buffer_size: config.buffer_size,
        idle_timeout: config.idle_timeout,
        client_first_byte_timeout: config.client_first_byte_timeout,
        sources: Sources::new(config.per_source),
        accept_proxy_from: config.accept_proxy_from.clone(),
    });

    // Health checks, admin endpoint and reloads live until the last connection is gone.
    let background = TaskTracker::new();
    let stop = CancellationToken::new();
    background.spawn(health::run(
        Arc::clone(&pool),
        Arc::clone(&stats),
        config.health.clone(),
        config.send_proxy_v2,
        stop.clone(),
    ));
    background.spawn(admin::serve(admin, Arc::clone(&shared), stop.clone()));
    background.spawn(reloads(
        reload,
        config.config_file.clone(),
        pool,
        Arc::clone(&stats),
        stop.clone(),
    ));

    let connections = TaskTracker::new();
    let drain_deadline = CancellationToken::new();
    // Dropped at the end of `run`, once every connection is gone.
    let shards = Arc::new(Shards::start(config.threads).map_err(Error::Threads)?);
    Listener::new(
        listener,
        config.max_connections,
        shared,
        Arc::clone(&shards),
        connections.clone(),
        drain_deadline.clone(),
    )
    .run(shutdown)
    .await;

    stats.draining.store(true, Ordering::Relaxed);
    connections.close();
    info!(
        connections = connections.len(),
        drain_timeout = ?config.drain_timeout,
        "stopped accepting; draining"
    );
    if tokio::time::timeout(config.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        warn!(
            connections = connections.len(),
            "drain timeout passed; closing the remaining connections"
        );
        drain_deadline.cancel();
        connections.wait().await;
    }
    stop.cancel();
    background.close();
    background.wait().await;
    info!(accepted = stats.accepted.load(Ordering::Relaxed), "stopped");
    Ok(())
}

/// Applies the backend list of the config file on every reload request. A file that cannot be
/// read or is invalid changes nothing; the current backends stay.
async fn reloads(
    mut requests: Reload,
    file: Option<PathBuf>,
    pool: Arc<Pool>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            request = requests.recv() => if request.is_none() { return },
        }
        let Some(path) = file.clone() else {
            info!("reload requested but backends come from flags; nothing to reload");
            continue;
        };
        let loaded = tokio::task::spawn_blocking(move || load_backends(&path)).await;
        match loaded {
            Ok(Ok(backends)) => {
                let change = pool.replace(&backends);
                stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                info!(added = ?change.added, removed = ?change.removed, "backends reloaded");
            }
            Ok(Err(err)) => {
                stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %err, "reload failed; keeping the current backends");
            }
            Err(err) => {
                stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %err, "reload task failed; keeping the current backends");
            }
        }
    }
}

fn load_backends(path: &std::path::Path) -> Result<Vec<String>, ConfigError> {
    let backends = FileConfig::load(path)?
        .backends
        .ok_or(ConfigError::NoBackends)?;
    config::validate_backends(&backends)?;
    Ok(backends)
}
