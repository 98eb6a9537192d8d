//! A WebSocket binary message's bytes through ClientFrame decoding and the
//! protocol's rules (see `chat_fuzz::frames`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chat_fuzz::frames::check(data));
