//! Arbitrary WebSocket message sequences from two clients against the
//! in-process gateway on the embedded bridge (see `chat_fuzz::session`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chat_fuzz::session::run(data));
