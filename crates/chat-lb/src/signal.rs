//! Requests from outside a running balancer: shut down (SIGTERM, SIGINT) and reload (SIGHUP).

use std::future::Future;
use std::pin::Pin;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// The two requests `run` reacts to. The binary builds them from OS signals; tests build them
/// from a future and a channel they control.
pub struct Signals {
    pub(crate) shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    pub(crate) reload: Reload,
}

/// Where reload requests come from.
pub(crate) enum Reload {
    Channel(mpsc::Receiver<()>),
    Hangup(Signal),
}

impl Reload {
    /// The next reload request; `None` once no more can come.
    pub(crate) async fn recv(&mut self) -> Option<()> {
        match self {
            Self::Channel(rx) => rx.recv().await,
            Self::Hangup(hup) => {
                let got = hup.recv().await;
                tracing::info!("SIGHUP received; reloading");
                got
            }
        }
    }
}

impl Signals {
    /// Shutdown starts when `shutdown` completes; every message on `reload` re-reads the
    /// config file.
    pub fn new(
        shutdown: impl Future<Output = ()> + Send + 'static,
        reload: mpsc::Receiver<()>,
    ) -> Self {
        Self {
            shutdown: Box::pin(shutdown),
            reload: Reload::Channel(reload),
        }
    }

    /// SIGTERM or SIGINT shut down gracefully; SIGHUP reloads. Must be called inside a tokio
    /// runtime; the handlers are installed before this returns, so no signal is lost between
    /// here and `run`.
    pub fn from_os() -> std::io::Result<Self> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let hup = signal(SignalKind::hangup())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; draining"),
                _ = int.recv() => tracing::info!("SIGINT received; draining"),
            }
        };
        Ok(Self {
            shutdown: Box::pin(shutdown),
            reload: Reload::Hangup(hup),
        })
    }
}
