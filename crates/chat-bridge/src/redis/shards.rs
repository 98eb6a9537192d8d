//! On a Redis Cluster, each primary's own connections for the messages: a
//! command connection (its publisher lane's pipelines, gap reads) and a
//! subscriber connection (the `SSUBSCRIBE`s of the rooms whose slots it
//! serves), routed by the bridge's own copy of the slot map.
//!
//! Why not fred's cluster client for these: it reconnects as a whole, and
//! while any primary is unreachable and still in the slot map (a primary
//! died and its replica has not yet taken over: the cluster's node timeout
//! plus an election) it routes nothing to any node, so every room of every
//! shard would wait. With a connection per primary, only the dead shard's
//! rooms wait. fred's cluster client stays for everything else (presence,
//! names, admin, bans): those pause during a failover, messages of the
//! other shards' rooms do not.
//!
//! The slot map is read with `CLUSTER SLOTS` from any primary that answers
//! (`topology.rs` does so every second and when a command was redirected);
//! a shard whose server no longer serves slots is closed.

use fred::types::cluster::ClusterRouting;
use fred::types::config::{Config, Server, ServerConfig};
use fred::types::Message;

use futures_util::future::join_all;

use super::*;

/// What the shards' subscriber connections hand the dispatcher, in order per
/// connection.
pub(super) enum Intake {
    /// A pub/sub message.
    Message(Message),
    /// This primary's subscriber connection (re)connected: its rooms'
    /// subscriptions are gone.
    Reconnected(Server),
    /// A subscriber connection dropped messages (its buffer overflowed).
    Lagged,
}

/// Intake items waiting for the dispatcher at most.
pub(super) const INTAKE: usize = 1 << 14;

/// One primary's connections.
pub(super) struct Shard {
    pub(super) client: Client,
    pub(super) subscriber: SubscriberClient,
    forwarder: JoinHandle<()>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.forwarder.abort();
        let (client, subscriber) = (self.client.clone(), self.subscriber.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.quit().await;
                let _ = subscriber.quit().await;
            });
        }
    }
}

/// The shards and the slot map they are routed by.
pub(super) struct Shards {
    /// The cluster's fred configuration (credentials, TLS), each shard's
    /// made from it; `None` on one Redis.
    base: Option<Config>,
    map: Mutex<HashMap<Server, Arc<Shard>>>,
    routing: Mutex<Option<ClusterRouting>>,
    intake: mpsc::Sender<Intake>,
}

impl Shards {
    /// Shards of the cluster configured by `base` (none without one), handing
    /// their traffic to `intake`.
    pub(super) fn new(base: Option<Config>, intake: mpsc::Sender<Intake>) -> Self {
        Self {
            base,
            map: Default::default(),
            routing: Default::default(),
            intake,
        }
    }

    /// The slot map as last read.
    pub(super) fn routing(&self) -> Option<ClusterRouting> {
        self.routing.lock().clone()
    }

    /// The primary serving `slot`, by the slot map as last read.
    pub(super) fn owner(&self, slot: u16) -> Option<Server> {
        self.routing.lock().as_ref()?.get_server(slot).cloned()
    }

    /// The shard serving `slot` (connected on first use); `None` while the
    /// slot map is unknown.
    pub(super) fn serving(&self, slot: u16) -> Option<Arc<Shard>> {
        let server = self.owner(slot)?;
        self.shard(&server)
    }

    /// `server`'s shard (connected on first use); `None` on one Redis.
    pub(super) fn shard(&self, server: &Server) -> Option<Arc<Shard>> {
        let mut map = self.map.lock();
        if let Some(shard) = map.get(server) {
            return Some(shard.clone());
        }
        let mut config = self.base.clone()?;
        config.server = ServerConfig::Centralized {
            server: server.clone(),
        };
        let builder = client_builder(config, false);
        let client = builder.build().ok()?;
        let subscriber = builder.build_subscriber_client().ok()?;
        client.connect();
        subscriber.connect();
        let forwarder = tokio::spawn(forward(
            server.clone(),
            subscriber.clone(),
            self.intake.clone(),
        ));
        let shard = Arc::new(Shard {
            client,
            subscriber,
            forwarder,
        });
        map.insert(server.clone(), shard.clone());
        Some(shard)
    }

    /// Connects to every primary of the slot map and waits (up to
    /// `timeout`) until those connections are up, so that the first rooms
    /// do not wait for them.
    pub(super) async fn connect_all(&self, timeout: Duration) {
        let Some(routing) = self.routing() else {
            return;
        };
        let shards: Vec<Arc<Shard>> = routing
            .unique_primary_nodes()
            .iter()
            .filter_map(|server| self.shard(server))
            .collect();
        let clients: Vec<Client> = shards
            .iter()
            .flat_map(|shard| [shard.client.clone(), shard.subscriber.to_client()])
            .collect();
        let connected = join_all(clients.iter().map(|client| client.wait_for_connect()));
        if tokio::time::timeout(timeout, connected).await.is_err() {
            tracing::warn!("some primaries are not reachable yet; retrying in the background");
        }
    }

    /// Takes `routing` as the slot map and closes the shards of servers that
    /// no longer serve slots; returns the previous map and those servers.
    pub(super) fn set_routing(
        &self,
        routing: ClusterRouting,
    ) -> (Option<ClusterRouting>, Vec<Server>) {
        let primaries: HashSet<Server> = routing.unique_primary_nodes().into_iter().collect();
        let mut gone = Vec::new();
        self.map.lock().retain(|server, _| {
            let keep = primaries.contains(server);
            if !keep {
                gone.push(server.clone());
            }
            keep
        });
        (self.routing.lock().replace(routing), gone)
    }

    /// Reads the slot map (`CLUSTER SLOTS`) from the first primary that
    /// answers, or else through `cluster` (fred's cluster client).
    pub(super) async fn read_routing(&self, cluster: &Client) -> Result<ClusterRouting> {
        let shards: Vec<(Server, Arc<Shard>)> = self
            .map
            .lock()
            .iter()
            .map(|(server, shard)| (server.clone(), shard.clone()))
            .collect();
        let asked = shards
            .iter()
            .map(|(server, shard)| (server.host.clone(), &shard.client))
            .chain(std::iter::once((Default::default(), cluster)));
        let mut last = BridgeError::Unavailable("no cluster node answered CLUSTER SLOTS".into());
        for (host, client) in asked {
            if !client.is_connected() {
                continue;
            }
            let slots = client.custom::<Value, Value>(
                CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
                vec![Value::from_static_str("SLOTS")],
            );
            match tokio::time::timeout(SLOTS_TIMEOUT, slots).await {
                Ok(Ok(value)) => {
                    return ClusterRouting::from_cluster_slots(value, host).map_err(unavailable)
                }
                Ok(Err(e)) => last = unavailable(e),
                Err(_) => last = BridgeError::Unavailable("CLUSTER SLOTS timed out".into()),
            }
        }
        Err(last)
    }
}

/// How long one node gets to answer `CLUSTER SLOTS`.
const SLOTS_TIMEOUT: Duration = Duration::from_millis(500);

/// Hands one shard's subscriber traffic to the dispatcher.
async fn forward(server: Server, subscriber: SubscriberClient, intake: mpsc::Sender<Intake>) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        let item = tokio::select! {
            reconnect = reconnects.recv() => match reconnect {
                Ok(_) => Intake::Reconnected(server.clone()),
                Err(RecvError::Lagged(_)) => Intake::Reconnected(server.clone()),
                Err(RecvError::Closed) => return,
            },
            message = messages.recv() => match message {
                Ok(message) => Intake::Message(message),
                Err(RecvError::Lagged(_)) => Intake::Lagged,
                Err(RecvError::Closed) => return,
            },
        };
        if intake.send(item).await.is_err() {
            return;
        }
    }
}
