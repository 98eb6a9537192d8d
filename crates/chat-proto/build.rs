//! Generates the prost code of `chat.v1` from `proto/` with the pure-Rust `protox`
//! compiler, so that no system `protoc` is needed. (The admin API is `chat-admin-proto`.)

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let chat = root.join("chat/v1/chat.proto");
    println!("cargo:rerun-if-changed={}", chat.display());

    let fds = protox::compile([&chat], [&root])?;
    prost_build::Config::new().compile_fds(fds)?;

    Ok(())
}
