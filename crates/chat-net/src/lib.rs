//! chat-net: the generic networking pieces that chat-lb and chat-gateway share, so each is
//! written, tested and fixed once: the PROXY protocol v2 header ([`proxy_v2`]: chat-lb writes
//! it, the gateway parses it), the listening socket with a deep accept queue ([`listen`]), and
//! the Prometheus text exposition writer ([`prometheus`]), and address blocks for lists of
//! trusted peers ([`cidr`]).
//!
//! **Invariant:** it knows nothing of chat: no protocol crate, no HTTP, no WebSocket. chat-lb,
//! which must stay ignorant of what it relays, may depend on it for that reason.

pub mod cidr;
pub mod listen;
pub mod prometheus;
pub mod proxy_v2;

pub use cidr::Cidr;
pub use listen::{bind_listener, LISTEN_BACKLOG};
