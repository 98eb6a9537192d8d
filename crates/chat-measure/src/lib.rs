//! chat-measure: what every measurement of `chat-bench` and `chat-yardstick` shares, and
//! nothing about what is measured. Latency histograms recorded from many threads
//! (`latency`), absolute-schedule pacing (`pacing`), CPU and memory of this and watched
//! processes (`usage`), the progress line and the sampled timeline (`progress`), the report
//! every run writes, as JSON and as a table (`report`), SVG plots (`plot`), the flags every
//! measuring command shares (`args`) and writing a run's outputs (`output`).

pub mod args;
pub mod latency;
pub mod output;
pub mod pacing;
pub mod plot;
pub mod progress;
pub mod report;
pub mod usage;
