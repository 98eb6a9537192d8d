//! Generates the prost types and tonic stubs of `chat.admin.v1` from `proto/` with the
//! pure-Rust `protox` compiler (no system `protoc`), and keeps the encoded descriptor set
//! for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let admin = root.join("chat/admin/v1/admin.proto");
    println!("cargo:rerun-if-changed={}", admin.display());
    let fds = protox::compile([&admin], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("admin_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
