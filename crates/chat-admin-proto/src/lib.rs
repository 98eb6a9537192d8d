//! The operator API `chat.admin.v1`: types and gRPC stubs (server and client) generated
//! from `proto/chat/admin/v1/admin.proto`. Its own crate, apart from `chat-proto`, because
//! it needs tonic and so a runtime: the chat protocol crate stays free of tokio by
//! construction, whoever depends on it.

#![allow(clippy::all, missing_docs, rust_2018_idioms)]
include!(concat!(env!("OUT_DIR"), "/chat.admin.v1.rs"));

/// Encoded `FileDescriptorSet` of the admin API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
