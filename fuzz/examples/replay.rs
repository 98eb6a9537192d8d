//! Runs inputs through a target's harness without libFuzzer, to read what a
//! crashing input does:
//! `CHAT_FUZZ_TRACE=1 cargo run --no-default-features --example replay -- session FILE...`

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_default();
    let check: fn(&[u8]) = match target.as_str() {
        "frame_decoder" => chat_fuzz::frames::check,
        "session" => chat_fuzz::session::run,
        _ => {
            eprintln!("usage: replay frame_decoder|session FILE...");
            std::process::exit(64);
        }
    };
    for path in args {
        let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        eprintln!("== {path}");
        check(&input);
    }
}
