//! Relay threads: one single-threaded tokio runtime per thread, each with its own I/O driver
//! (its own epoll), as thread-per-core proxies do. A relayed connection, both of its sockets,
//! lives on one thread for its whole life: no work stealing, no wake-ups across threads, and
//! the kernel's state for those sockets stays in one core's cache. Accepting, health checks
//! and the admin endpoint stay on the main runtime.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// The relay threads; dropping this stops them (after their connections are gone).
pub(crate) struct Shards {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    next: AtomicUsize,
}

impl Shards {
    /// Starts `n` relay threads (at least one).
    pub(crate) fn start(n: usize) -> io::Result<Self> {
        // Built up in place, so that a failure part-way stops the threads already started.
        let mut shards = Self {
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            stop: CancellationToken::new(),
            next: AtomicUsize::new(0),
        };
        for i in 0..n.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            shards.handles.push(runtime.handle().clone());
            let stop = shards.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("chat-lb-relay-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            shards.threads.push(thread);
        }
        Ok(shards)
    }

    /// The thread for the next connection, in turn.
    pub(crate) fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_every_thread_in_turn_and_drop_stops_them() {
        let shards = Shards::start(3).unwrap();
        let names: Vec<String> = (0..6)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                shards.next().spawn(async move {
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    tx.send(name).unwrap();
                });
                rx.recv().unwrap()
            })
            .collect();
        assert_eq!(
            names,
            [0, 1, 2, 0, 1, 2].map(|i| format!("chat-lb-relay-{i}"))
        );
        drop(shards); // returns only once every thread has stopped
    }
}
