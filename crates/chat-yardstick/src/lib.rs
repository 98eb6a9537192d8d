//! chat-yardstick: two measurements of the machine rather than of the chat system, to
//! read the system's figures against. `floor` sends a fan-out's deliveries with nothing but
//! sockets and one relay hop (three threads, each one's CPU reported); `relay` is the least a
//! Layer-4 balancer can do (one thread on mio, read and write). A target below the floor's
//! figure cannot be met on that machine by any design of this shape.
//!
//! `chat-bench floor` and `chat-bench relay` run them (as does the `chat-yardstick` binary).
//! **Invariant:** no chat crate; the data path runs on plain threads and mio, no runtime.

pub mod floor;
pub mod relay;

pub use floor::{FloorArgs, FloorResults, StageCpu};
pub use relay::RelayArgs;
