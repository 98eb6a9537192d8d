//! The room list that `/api/rooms` serves: a snapshot rebuilt from the
//! bridge at most once a second however many ask, so a burst of requests
//! costs the cluster one listing. Apart from `http.rs` so that the shared
//! state can own the cache without importing the routes.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_bridge::Bridge;
use http::StatusCode;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How often, at most, `/api/rooms` asks the bridge.
const ROOMS_REFRESH: Duration = Duration::from_secs(1);

/// Rooms `/api/rooms` lists at most (the busiest).
pub(crate) const MAX_LISTED_ROOMS: usize = 50;

#[derive(serde::Serialize)]
struct RoomsBody {
    rooms: Vec<RoomEntry>,
}

#[derive(serde::Serialize)]
struct RoomEntry {
    name: String,
    members: u32,
}

/// The `/api/rooms` answer, rebuilt from the bridge at most once a second
/// however many ask: while it is fresh, or while another request rebuilds
/// it, everyone gets the snapshot as it is.
pub(crate) struct RoomsCache {
    /// The last answer; `None` until the first rebuild ends.
    snapshot: watch::Sender<Option<Arc<RoomsSnapshot>>>,
    /// Set while one request rebuilds it.
    refreshing: AtomicBool,
}

/// One answer of `/api/rooms`.
pub(crate) struct RoomsSnapshot {
    /// When its rebuild started: it is fresh for a second from then.
    started: Instant,
    status: StatusCode,
    body: Bytes,
}

impl Default for RoomsCache {
    fn default() -> Self {
        Self {
            snapshot: watch::Sender::new(None),
            refreshing: AtomicBool::new(false),
        }
    }
}

/// Clears `refreshing` however the rebuild ends (a client that hangs up
/// drops the request's future half-way).
struct Rebuilding<'a>(&'a AtomicBool);

impl Drop for Rebuilding<'_> {
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

impl RoomsCache {
    pub(crate) async fn get(&self, bridge: &dyn Bridge, metrics: &Metrics) -> Arc<RoomsSnapshot> {
        loop {
            let current = self.snapshot.borrow().clone();
            if let Some(snapshot) = &current {
                if snapshot.started.elapsed() < ROOMS_REFRESH {
                    return snapshot.clone();
                }
            }
            if self
                .refreshing
                .compare_exchange(false, true, AcqRel, Acquire)
                .is_ok()
            {
                let _rebuilding = Rebuilding(&self.refreshing);
                let fresh = Arc::new(RoomsSnapshot::build(bridge, metrics).await);
                self.snapshot.send_replace(Some(fresh.clone()));
                return fresh;
            }
            if let Some(older) = current {
                return older;
            }
            // The very first rebuild is under way: wait for it, and look
            // again now and then in case its request was dropped.
            let mut ready = self.snapshot.subscribe();
            let _ =
                tokio::time::timeout(Duration::from_millis(50), ready.wait_for(Option::is_some))
                    .await;
        }
    }
}

impl RoomsSnapshot {
    /// Asks the bridge once; keeps the busiest rooms. Errors are logged, not shown.
    async fn build(bridge: &dyn Bridge, metrics: &Metrics) -> Self {
        let started = Instant::now();
        metrics.rooms_api_refreshes.fetch_add(1, Relaxed);
        match bridge.rooms(MAX_LISTED_ROOMS).await {
            Ok(mut rooms) => {
                rooms.sort_by(|a, b| {
                    b.member_count
                        .cmp(&a.member_count)
                        .then_with(|| a.name.cmp(&b.name))
                });
                rooms.truncate(MAX_LISTED_ROOMS);
                let body = RoomsBody {
                    rooms: rooms
                        .into_iter()
                        .map(|r| RoomEntry {
                            name: r.name,
                            members: r.member_count,
                        })
                        .collect(),
                };
                Self {
                    started,
                    status: StatusCode::OK,
                    body: serde_json::to_vec(&body).unwrap_or_default().into(),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing rooms for /api/rooms failed");
                Self {
                    started,
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    body: Bytes::from_static(br#"{"error":"unavailable"}"#),
                }
            }
        }
    }
}

impl RoomsSnapshot {
    /// The HTTP status to answer with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }
}
