//! Fuzz harnesses of the chat protocol and gateway. The libFuzzer entry
//! points in `fuzz_targets/` call these; `tests/replay.rs` replays the
//! seeds and the regressions through them without libFuzzer.

pub mod frames;
pub mod seeds;
pub mod session;
pub mod smoke;
