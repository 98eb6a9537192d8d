//! [`Pending`]: the outcome of a [`RoomLog::submit`](crate::RoomLog::submit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::{Accepted, BridgeError, Result};

/// A submitted message whose place in the room's order is fixed and whose
/// outcome (what [`RoomLog::publish`](crate::RoomLog::publish) would have
/// returned) may not be known yet. Resolves once; dropping it does not
/// withdraw the message.
#[must_use = "the outcome is the sender's Ack or error"]
pub struct Pending(State);

enum State {
    Ready(Option<Result<Accepted>>),
    Waiting(oneshot::Receiver<Result<Accepted>>),
}

impl Pending {
    /// An outcome known at once.
    pub fn ready(outcome: Result<Accepted>) -> Self {
        Self(State::Ready(Some(outcome)))
    }

    /// An outcome a backend task will send.
    pub(crate) fn waiting(outcome: oneshot::Receiver<Result<Accepted>>) -> Self {
        Self(State::Waiting(outcome))
    }
}

impl Future for Pending {
    type Output = Result<Accepted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            State::Ready(outcome) => {
                Poll::Ready(outcome.take().expect("Pending polled after it resolved"))
            }
            State::Waiting(rx) => Pin::new(rx).poll(cx).map(|outcome| {
                outcome.unwrap_or_else(|_| {
                    Err(BridgeError::Unavailable(
                        "the publisher stopped before answering".into(),
                    ))
                })
            }),
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.0 {
            State::Ready(_) => "ready",
            State::Waiting(_) => "waiting",
        };
        f.debug_tuple("Pending").field(&state).finish()
    }
}
