//! The chat wire protocol: types generated from `proto/` and the protocol's
//! validation rules as plain functions (no runtime, no I/O).
//!
//! Everything a gateway or a client needs to agree on lives here, so that the
//! rules are written once and unit-tested once.

mod id;
pub mod rules;
mod validate;

pub use id::{MessageId, ParseIdError};
pub use rules::{
    clamp_page_limit, DEFAULT_PAGE_LIMIT, MAX_CLIENT_MSG_ID_BYTES, MAX_FRAME_BYTES, MAX_PAGE_LIMIT,
    MIN_FRAME_BYTES,
};
pub use validate::{
    check_client_msg_id, check_text, normalize_room, normalize_username, NameError, TextError,
    Username, MAX_ROOM_CHARS, MAX_USERNAME_CHARS,
};

/// Generated types of `chat.v1` (the client/server protocol).
pub mod v1 {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    include!(concat!(env!("OUT_DIR"), "/chat.v1.rs"));
}

pub use prost::Message;

/// Encodes a frame into a fresh buffer sized exactly for it.
pub fn encode<M: prost::Message>(msg: &M) -> Vec<u8> {
    msg.encode_to_vec()
}
