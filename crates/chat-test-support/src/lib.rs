//! Test harness for the chat system: real gateways, a real redis-server (or
//! a real Redis Cluster), and `eventually`.
//!
//! Everything here starts real processes on free loopback ports and cleans
//! them up on drop; nothing is mocked. Gateway logs (stderr) go to files under
//! `test-artifacts/logs/` (or `$CHAT_TEST_ARTIFACTS`), named after the test.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chat_test_support::HarnessError> {
//! use chat_test_support::{BackendKind, Gateway};
//! let bin = "target/debug/chat-gateway"; // env!("CARGO_BIN_EXE_chat-gateway") in a test
//! let backend = BackendKind::Memory.setup().await?;
//! let gateway = backend.gateway(bin, &["--max-rooms", "2"]).await?;
//! let mut alice = gateway.client("alice").await?;
//! alice.join("lobby").await?;
//! let (status, body) = gateway.get("/healthz").await?;
//! # let _ = (status, body); Ok(()) }
//! ```

mod admin;
mod artifacts;
mod backend;
mod balancer;
mod cluster;
mod error;
mod eventually;
mod gateway;
mod http;
mod kicked;
mod member;
mod redis;
mod redis_cluster;

pub use admin::{admin_addr, chat_admin_bin, run_chat_admin};
pub use artifacts::artifacts_dir;
pub use backend::{Backend, BackendFixture, BackendKind};
pub use balancer::Balancer;
pub use cluster::Cluster;
pub use error::HarnessError;
pub use eventually::{eventually, try_eventually, Attempt};
pub use gateway::{run_to_exit, Gateway, FAST_SENDS};
pub use http::{http_get, metric_value, raw_ws_handshake, ws_upgrade_status};
pub use kicked::kicked;
pub use member::{Audit, Member, Seen};
pub use redis::{RedisOptions, RedisServer, RedisTls, RespValue};
pub use redis_cluster::{key_slot, RedisCluster, DEFAULT_NODE_TIMEOUT, SLOTS};
