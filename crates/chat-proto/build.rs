//! Generates the prost (and, with `admin`, tonic) code from `proto/` with the
//! pure-Rust `protox` compiler, so that no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let chat = root.join("chat/v1/chat.proto");
    println!("cargo:rerun-if-changed={}", chat.display());

    let fds = protox::compile([&chat], [&root])?;
    prost_build::Config::new().compile_fds(fds)?;

    #[cfg(feature = "admin")]
    {
        let admin = root.join("chat/admin/v1/admin.proto");
        println!("cargo:rerun-if-changed={}", admin.display());
        let fds = protox::compile([&admin], [&root])?;
        let out = PathBuf::from(std::env::var("OUT_DIR")?);
        std::fs::write(
            out.join("admin_descriptor.bin"),
            prost::Message::encode_to_vec(&fds),
        )?;
        tonic_prost_build::configure().compile_fds(fds)?;
    }
    Ok(())
}
