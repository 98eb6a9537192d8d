//! chat-lb: a layer-4 TCP load balancer. It moves bytes between clients and backends and never
//! looks at them; it knows nothing of HTTP, WebSocket or chat on the data path.
//!
//! Entry point: [`run`]. The binary parses flags into a [`Config`], binds the two listeners,
//! and calls it with [`Signals::from_os`]; tests call it with [`Signals::new`].

mod admin;
mod backend;
mod config;
mod connection;
mod error;
mod health;
mod listener;
mod metrics;
mod pool;
mod relay;
mod server;
mod shards;
mod signal;
mod slot;
mod sources;
mod terminator;

pub use config::{
    parse_duration, validate_backend, Config, ConfigError, FileConfig, HealthConfig, HealthMode,
    SourceLimits,
};
pub use error::Error;
pub use server::run;
pub use signal::Signals;
