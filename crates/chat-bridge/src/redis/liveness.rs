//! Liveness: the heartbeat of this gateway process (instance), finding a
//! live or dead earlier process of the same gateway id at start, restoring
//! this process's state after an outage, and cleaning up after dead ones.

use super::*;

/// Heartbeat period and the TTL of the heartbeat key. A crashed gateway's
/// key expires at most `HEARTBEAT_TTL` after the crash and a peer's next beat
/// (at most `HEARTBEAT_EVERY` later) cleans up: its users are shown leaving
/// and their names are free within 5 s. The cost is one pipelined write and
/// two reads per gateway per second.
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
pub(super) const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// A gateway must have been connected this long before it judges others dead,
/// so that one coming back from an outage (Redis restarted empty, say) does
/// not reap peers that have not refreshed their heartbeat yet. Its own dead
/// predecessors are exempt: it knows them dead.
pub(super) const REAP_AFTER_CONNECTED: Duration =
    Duration::from_millis(HEARTBEAT_TTL.as_millis() as u64 + HEARTBEAT_EVERY.as_millis() as u64);
/// How long a starting gateway watches the heartbeat of an earlier process
/// with its id: a live one beats within this time, a crashed one does not.
pub(super) const PREDECESSOR_WATCH: Duration =
    Duration::from_millis(2 * HEARTBEAT_EVERY.as_millis() as u64 + 500);
/// After a load change is written early (see `set_load`), the next early
/// write waits this long, so a burst of connections costs one write.
pub(super) const STATUS_DEBOUNCE: Duration = Duration::from_millis(200);
impl Inner {
    /// Whether an earlier process of this gateway id left a heartbeat, and
    /// if so whether it is alive: `Ok(Some(instance))` for a dead one, an
    /// error for a live one (this process must not start).
    pub(super) async fn find_predecessor(&self) -> Result<Option<String>> {
        let me = &self.config.gateway_id;
        let record: Option<String> = self
            .client
            .hget(self.keys.gateways(), me)
            .await
            .map_err(unavailable)?;
        let Some(record) =
            record.and_then(|r| serde_json::from_str::<admin::StatusRecord>(&r).ok())
        else {
            return Ok(None);
        };
        let instance = record.instance_or(me).to_owned();
        if instance == self.config.instance {
            return Ok(None);
        }
        let alive = self.keys.alive(&instance);
        let Some(first) = self
            .client
            .get::<Option<String>, _>(&alive)
            .await
            .map_err(unavailable)?
        else {
            return Ok(Some(instance));
        };
        let ours = self
            .config
            .bound
            .filter(|bound| bound.ip().is_loopback() && bound.port() != 0);
        if ours.is_some_and(|bound| record.address.parse::<SocketAddr>() == Ok(bound)) {
            return Ok(Some(instance)); // It served our port on this host: gone.
        }
        let until = Instant::now() + PREDECESSOR_WATCH;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now: Option<String> = self.client.get(&alive).await.map_err(unavailable)?;
            match now {
                None => break,
                Some(beat) if beat != first => {
                    return Err(BridgeError::GatewayIdInUse {
                        gateway_id: me.clone(),
                        instance,
                        address: record.address,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(Some(instance))
    }

    /// Re-writes names and presence after an outage (or after another
    /// gateway wrongly judged this one dead).
    pub(super) async fn restore(&self) {
        let (names, presence) = {
            let local = self.local.lock();
            let names: Vec<(Member, TokenHash)> = local.names.values().cloned().collect();
            let presence: Vec<(String, Member)> = local
                .presence
                .iter()
                .map(|((room, _), m)| (room.clone(), m.clone()))
                .collect();
            (names, presence)
        };
        for (member, resume) in &names {
            match self.claim(member, resume).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(name = %member.key, "name was claimed elsewhere during an outage")
                }
                Err(e) => tracing::warn!(error = %e, "restoring a name failed"),
            }
        }
        for (room, member) in &presence {
            if let Err(e) = self.enter(room, member).await {
                tracing::warn!(error = %e, room, "restoring presence failed");
            }
        }
        if !names.is_empty() || !presence.is_empty() {
            tracing::info!(
                names = names.len(),
                rooms = presence.len(),
                "restored presence in redis"
            );
        }
    }
}

#[async_trait]
impl Lifecycle for RedisBridge {
    fn is_available(&self) -> bool {
        // On a cluster the rooms' subscriptions are on each primary's own
        // connection (`shards.rs`), which come and go with the primaries.
        self.inner.client.is_connected()
            && (self.inner.sharded || self.inner.subscriber.is_connected())
    }

    async fn leave_cluster(&self) {
        let inner = &self.inner;
        if inner.check().is_err() {
            return; // Peers clean up after the heartbeat expires.
        }
        let id = inner.config.gateway_id.clone();
        let instance = inner.config.instance.clone();
        // Stop the heartbeat first so it cannot write the status back.
        for task in &self.tasks {
            task.abort();
        }
        let cleaned = async {
            let _: () = inner.client.del(inner.keys.alive(&instance)).await?;
            // Whatever sessions could not remove themselves (e.g. Redis blipped).
            reap_instance(inner, &instance, &id).await?;
            Ok::<_, fred::error::Error>(())
        };
        match cleaned.await {
            Ok(()) => tracing::info!(gateway = %id, "left the cluster"),
            Err(e) => {
                tracing::warn!(error = %e, "leaving the cluster failed; peers clean up after the heartbeat expires")
            }
        }
    }

    fn set_load(&self, connections: u32, draining: bool) {
        let inner = &self.inner;
        let before = inner.connections.swap(connections, Ordering::Relaxed);
        let was_draining = inner.draining.swap(draining, Ordering::Relaxed);
        if before != connections || was_draining != draining {
            inner.load_changed.notify_one();
        }
    }
}

/// Heartbeat, restore after outages, and cleanup after dead gateways.
pub(super) async fn heartbeat(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected_since: Option<Instant> = None;
    loop {
        tokio::select! {
            // The beat first: the first one (immediate) makes this gateway
            // live for the others, and a burst of load changes must not
            // starve the heartbeat.
            biased;
            _ = tick.tick() => {}
            () = inner.load_changed.notified() => {
                if inner.client.is_connected() {
                    if let Err(e) = write_status(&inner).await {
                        tracing::debug!(error = %e, "writing the gateway status failed");
                    }
                }
                tokio::time::sleep(STATUS_DEBOUNCE).await;
                continue;
            }
        }
        if !inner.client.is_connected() {
            connected_since = None;
            continue;
        }
        let since = *connected_since.get_or_insert_with(Instant::now);
        match beat(&inner).await {
            // No previous heartbeat: first beat, Redis lost its data, or we
            // were judged dead. Either way, write our state (again).
            Ok(true) => inner.restore().await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                continue;
            }
        }
        let settled = since.elapsed() >= REAP_AFTER_CONNECTED;
        if let Err(e) = reap_dead(&inner, settled).await {
            tracing::warn!(error = %e, "cleaning up after dead gateways failed");
        }
    }
}

/// Refreshes the heartbeat key, the status entry and the instance entry,
/// in one round trip; true when there was no previous heartbeat (first
/// beat, Redis lost its data, or judged dead).
pub(super) async fn beat(inner: &Inner) -> Result<bool, fred::error::Error> {
    let instance = &inner.config.instance;
    let pipeline = inner.client.pipeline();
    let _: () = pipeline
        .set(
            inner.keys.alive(instance),
            now_ms().to_string(),
            Some(Expiration::PX(HEARTBEAT_TTL.as_millis() as i64)),
            None,
            true,
        )
        .await?;
    let _: () = pipeline
        .hset(
            inner.keys.gateways(),
            (inner.config.gateway_id.as_str(), status_json(inner)?),
        )
        .await?;
    let _: () = pipeline
        .hset(
            inner.keys.instances(),
            (instance.as_str(), inner.config.gateway_id.as_str()),
        )
        .await?;
    let mut replies = pipeline.try_all::<Value>().await.into_iter();
    let previous = replies.next().unwrap_or(Ok(Value::Null))?;
    for reply in replies {
        reply?;
    }
    Ok(previous.is_null())
}

pub(super) fn status_json(inner: &Inner) -> Result<String, fred::error::Error> {
    serde_json::to_string(&inner.status_record())
        .map_err(|e| fred::error::Error::new(fred::error::ErrorKind::Parse, e.to_string()))
}

/// Writes this gateway's entry of the `gateways` hash (JSON, for admin).
pub(super) async fn write_status(inner: &Inner) -> Result<(), fred::error::Error> {
    inner
        .client
        .hset(
            inner.keys.gateways(),
            (inner.config.gateway_id.as_str(), status_json(inner)?),
        )
        .await
}

/// Removes the presence and names of instances whose heartbeat expired:
/// any such instance once this gateway has `settled` (been connected long
/// enough for live peers to have beaten), its own dead predecessors at once.
pub(super) async fn reap_dead(inner: &Inner, settled: bool) -> Result<(), fred::error::Error> {
    let instances: HashMap<String, String> = inner.client.hgetall(inner.keys.instances()).await?;
    let others: Vec<(&String, &String)> = {
        let predecessors = inner.predecessors.lock();
        instances
            .iter()
            .filter(|(instance, _)| **instance != inner.config.instance)
            .filter(|(instance, _)| settled || predecessors.contains(*instance))
            .collect()
    };
    if others.is_empty() {
        return Ok(());
    }
    // One GET per key (pipelined), not MGET: on a Redis Cluster the keys
    // live in different slots.
    let pipeline = inner.client.pipeline();
    for (instance, _) in &others {
        let _: () = pipeline.get(inner.keys.alive(instance)).await?;
    }
    let beats = pipeline.try_all::<Option<String>>().await;
    for ((dead, gateway), beat) in others.into_iter().zip(beats) {
        if beat?.is_some() {
            continue;
        }
        // One reaper per dead instance.
        let won: Option<String> = inner
            .client
            .set(
                inner.keys.reaper(dead),
                inner.config.instance.as_str(),
                Some(Expiration::PX(30_000)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        if won.is_none() {
            continue;
        }
        let (removed, names) = reap_instance(inner, dead, gateway).await?;
        inner.predecessors.lock().remove(dead);
        tracing::info!(gateway = %gateway, instance = %dead, presence = removed, names, "cleaned up after a dead gateway");
    }
    Ok(())
}

/// Removes an instance's presence entries (publishing `Left`), its name
/// claims, its indexes, its instance entry and (if still its own) its
/// gateway's status entry. Returns (entries, names) removed.
pub(super) async fn reap_instance(
    inner: &Inner,
    dead: &str,
    gateway: &str,
) -> Result<(u64, usize), fred::error::Error> {
    let tag = instance_tag(dead);
    let rooms: Vec<String> = inner
        .client
        .smembers(inner.keys.gateway_rooms(dead))
        .await?;
    let mut removed = 0u64;
    for room in &rooms {
        let (n, left): (u64, i64) = inner
            .reap_room
            .evalsha_with_reload(
                &inner.client,
                inner.room_state_keys(room),
                vec![
                    tag.clone(),
                    inner.keys.channel(room),
                    wire::presence_prefix(PresenceKind::Left).to_owned(),
                    inner.room_ttl_ms(),
                ],
            )
            .await?;
        if n > 0 {
            count_members(&inner.client, &inner.keys, room, left).await?;
        }
        removed += n;
    }
    let names: Vec<String> = inner
        .client
        .smembers(inner.keys.gateway_names(dead))
        .await?;
    let mut freed = 0;
    for name in &names {
        let taken: Option<String> = inner
            .take_if_prefix
            .evalsha_with_reload(
                &inner.client,
                vec![inner.keys.name(name)],
                vec![tag.clone()],
            )
            .await?;
        if let Some(holder) = taken.as_deref().and_then(Holder::parse) {
            let _: () = inner
                .client
                .del(inner.keys.session_rooms(holder.session))
                .await?;
            freed += 1;
        }
    }
    // Two DELs: on a Redis Cluster the keys live in different slots.
    let _: () = inner.client.del(inner.keys.gateway_rooms(dead)).await?;
    let _: () = inner.client.del(inner.keys.gateway_names(dead)).await?;
    let _: () = inner.client.hdel(inner.keys.instances(), dead).await?;
    // The status entry, unless a newer process of that gateway wrote it.
    let record: Option<String> = inner.client.hget(inner.keys.gateways(), gateway).await?;
    let owned = record
        .and_then(|r| serde_json::from_str::<admin::StatusRecord>(&r).ok())
        .is_some_and(|r| r.instance_or(gateway) == dead);
    if owned {
        let _: () = inner.client.hdel(inner.keys.gateways(), gateway).await?;
    }
    Ok((removed, freed))
}
