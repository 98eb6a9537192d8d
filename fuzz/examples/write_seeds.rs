//! Writes the seed inputs of `chat_fuzz::seeds` to `seeds/<target>/`.
//! Run after changing them: `cargo run --no-default-features --example write_seeds`.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, seeds) in [
        ("frame_decoder", chat_fuzz::seeds::frame_decoder()),
        ("session", chat_fuzz::seeds::session()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}
