//! The chat gateway: a hyper HTTP server whose `/ws` route upgrades to the
//! chat WebSocket protocol, plus the web client, health, metrics and the room
//! list; and, on a second listener, the operator gRPC API. Cluster concerns
//! are delegated to a `chat_bridge::Bridge`.
//!
//! Only this crate knows HTTP, WebSocket and gRPC.

mod admin;
mod auth;
mod cluster_secret;
mod config;
mod conn;
mod control;
mod http;
mod hub;
mod metrics;
mod origin;
mod ratelimit;
mod rooms_api;
mod secrets;
mod server;
mod session;
mod state;
mod tls;
mod wire;

use std::future::Future;
use std::sync::Arc;

use chat_bridge::{Bridge, EventSink, MemoryBridge, RedisBridge, RedisConfig};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use cluster_secret::ControlPathArgs;
pub use config::{AdminToken, AuthFlags, Config, LogFormat};
pub use origin::{AllowedOrigin, Origin, OriginConfig};
pub use secrets::read_secret_file;
pub use session::RECONNECT_GRACE;
pub use tls::{check_tls_files, TlsFlags};

/// Why [`run`] could not serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was refused (the message names the flag).
    #[error("{0}")]
    Config(String),
    /// The listening socket's address could not be read.
    #[error("cannot read the listening address")]
    LocalAddr(#[source] std::io::Error),
    /// The bridge could not start: Redis unreachable, or another live
    /// process of this gateway id (`BridgeError::GatewayIdInUse`).
    #[error(transparent)]
    Bridge(#[from] chat_bridge::BridgeError),
}

/// Serves on `listener` (and the admin API on `admin_listener`, when given)
/// until `shutdown` resolves (or a drain is requested), then drains: health
/// 503, `Reconnect` to every client, close at the deadline. The admin API
/// answers until the drain is over.
///
/// `ready` is called once the gateway is connected to its bridge and about
/// to accept connections (the binary prints its addresses then).
pub async fn run(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    mut config: Config,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.load_secrets().map_err(Error::Config)?;
    config.validate().map_err(Error::Config)?;
    let gateway_id = config
        .gateway_id
        .clone()
        .unwrap_or_else(state::default_gateway_id);
    let instance_id = state::new_instance_id(&gateway_id);
    let bound = listener.local_addr().map_err(Error::LocalAddr)?;
    let address = config.advertise.clone().unwrap_or(bound.to_string());
    let metrics = Arc::new(metrics::Metrics::default());
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(256);
    let hub = hub::Hub::new(metrics.clone(), control_tx);
    let sink: Arc<dyn EventSink> = hub.clone();
    let redis = match (&config.redis, &config.redis_cluster) {
        (Some(url), _) => Some((url, false)),
        (None, Some(seeds)) => Some((seeds, true)),
        (None, None) => None,
    };
    let bridge: Arc<dyn Bridge> = match redis {
        None => Arc::new(
            MemoryBridge::new(config.history_len as usize, sink)
                .with_gateway(gateway_id.clone(), address)
                .with_room_limits(config.room_ttl, config.max_rooms_retained as usize),
        ),
        Some((url, cluster)) => {
            let redis = RedisConfig {
                url: url.clone(),
                cluster,
                tls_ca: config.tls.redis_tls_ca.clone(),
                prefix: config.redis_prefix.clone(),
                gateway_id: gateway_id.clone(),
                instance: instance_id.clone(),
                address,
                bound: Some(bound),
                history_len: config.history_len as usize,
                room_ttl: config.room_ttl,
                cluster_secret: config.control.secret().map_err(Error::Config)?,
            };
            Arc::new(RedisBridge::connect(redis, sink).await?)
        }
    };
    let tls = match (&config.tls.tls_cert, &config.tls.tls_key) {
        (Some(cert), Some(key)) => {
            Some(Arc::new(tls::Tls::load(cert, key).map_err(Error::Config)?))
        }
        _ => None,
    };
    // Loaded before the bridge would be, but after `validate` read the
    // same files: a key file that vanished meanwhile is still an error.
    let auth = auth::Verifier::load(&config.auth_files()).map_err(Error::Config)?;
    let shared = state::Shared::new(config, gateway_id, instance_id, bridge, hub, metrics, auth);
    tracing::info!(gateway_id = %shared.gateway_id, instance = %shared.instance_id, addr = %bound, "serving");
    ready();

    // The control task and the admin API live as long as the HTTP side.
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(control::run(shared.clone(), control_rx, stop.clone()));
    if let Some(admin_listener) = admin_listener {
        let (shared, stop) = (shared.clone(), stop.clone());
        tasks.spawn(async move {
            if let Err(e) = admin::serve(admin_listener, shared, stop).await {
                tracing::error!("admin api failed: {e:#}");
            }
        });
    }
    if let Some(tls) = &tls {
        tasks.spawn(tls::reload_on_sighup(tls.clone(), stop.clone()));
    }
    server::serve(listener, shared.clone(), tls, shutdown).await;
    stop.cancel();
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "gateway task failed");
        }
    }
    shared.bridge.leave_cluster().await;
    Ok(())
}
