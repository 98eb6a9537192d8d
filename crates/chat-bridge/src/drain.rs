//! Drain requests that wait for the drained gateway's answer: how many
//! connections it told to reconnect (not what its last heartbeat said).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::{BridgeError, Result, DRAIN_REPLY_TIMEOUT};

/// The drain requests of this gateway that wait for an answer, by request id.
#[derive(Default)]
pub(crate) struct DrainReplies {
    next: AtomicU64,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<u32>>>>,
}

/// One request's answer, once it comes.
pub(crate) struct DrainReply {
    id: String,
    answer: oneshot::Receiver<u32>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<u32>>>>,
}

impl DrainReplies {
    /// A new request id, unique cluster-wide when `origin` is (the asking
    /// gateway's instance), and where its answer will arrive.
    pub(crate) fn expect(&self, origin: &str) -> DrainReply {
        let id = format!("{origin}/{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, answer) = oneshot::channel();
        self.waiting.lock().insert(id.clone(), tx);
        DrainReply {
            id,
            answer,
            waiting: self.waiting.clone(),
        }
    }

    /// Hands an answer to the request waiting for it (ignored when none is:
    /// it timed out, or another gateway asked).
    pub(crate) fn answer(&self, id: &str, told: u32) {
        if let Some(tx) = self.waiting.lock().remove(id) {
            let _ = tx.send(told);
        }
    }
}

impl DrainReply {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The number of connections the gateway told to reconnect.
    pub(crate) async fn wait(mut self, gateway_id: &str) -> Result<u32> {
        match tokio::time::timeout(DRAIN_REPLY_TIMEOUT, &mut self.answer).await {
            Ok(Ok(told)) => Ok(told),
            _ => Err(BridgeError::Unavailable(format!(
                "gateway {gateway_id} did not confirm the drain within {DRAIN_REPLY_TIMEOUT:?}"
            ))),
        }
    }
}

impl Drop for DrainReply {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reaches_its_request_only() {
        let replies = DrainReplies::default();
        let first = replies.expect("gw~1");
        let second = replies.expect("gw~1");
        assert_ne!(first.id(), second.id());
        replies.answer(second.id(), 7);
        replies.answer("someone else's", 9);
        assert_eq!(second.wait("gw").await.unwrap(), 7);
        drop(first);
        assert!(
            replies.waiting.lock().is_empty(),
            "a dropped request is forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_request_times_out() {
        let replies = DrainReplies::default();
        let reply = replies.expect("gw~1");
        assert!(reply.wait("gw-2").await.is_err());
    }
}
