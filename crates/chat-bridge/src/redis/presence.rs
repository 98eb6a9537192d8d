//! Presence and names in Redis: the member tag every entry carries, entering
//! a room, claiming a name, and taking a session over with its resume token.

use fred::clients::Pipeline;

use super::join_fence::JOIN_FENCE_WAIT;
use super::*;

impl Inner {
    /// The prefix of every value this session writes: "instance\tsession\t".
    pub(super) fn tag(&self, member: &Member) -> String {
        tag_of(&self.config.instance, &member.session_id)
    }

    /// The keys whose lifetime follows the room's presence: members, then
    /// stream and trimmed, then the sessions of each member (the ENTER,
    /// LEAVE and REAP_ROOM scripts' KEYS).
    pub(super) fn room_state_keys(&self, room: &str) -> Vec<String> {
        vec![
            self.keys.members(room),
            self.keys.stream(room),
            self.keys.trimmed(room),
            self.keys.sessions(room),
        ]
    }

    pub(super) fn room_ttl_ms(&self) -> String {
        self.config.room_ttl.as_millis().max(1).to_string()
    }

    /// Indexes a session's presence in rooms (its instance's rooms, the
    /// session's rooms, the room list) and, with `members`, the room's
    /// member count, in one round trip.
    pub(super) async fn index_presence(
        &self,
        session: &str,
        rooms: &[String],
        members: Option<(&str, usize)>,
    ) -> Result<()> {
        let pipeline = self.client.pipeline();
        self.queue_index(&pipeline, session, rooms, members)
            .await
            .map_err(unavailable)?;
        run_pipeline(&pipeline).await
    }

    /// Queues [`Inner::index_presence`]'s commands on `pipeline`.
    async fn queue_index(
        &self,
        pipeline: &Pipeline<Client>,
        session: &str,
        rooms: &[String],
        members: Option<(&str, usize)>,
    ) -> Result<(), fred::error::Error> {
        let _: () = pipeline
            .sadd(
                self.keys.gateway_rooms(&self.config.instance),
                rooms.to_vec(),
            )
            .await?;
        let _: () = pipeline
            .sadd(self.keys.session_rooms(session), rooms.to_vec())
            .await?;
        if let Some((room, count)) = members {
            count_members(pipeline, &self.keys, room, count as i64).await?;
        }
        pipeline
            .sadd::<(), _, _>(self.keys.rooms(), rooms.to_vec())
            .await
    }

    pub(super) async fn enter(&self, room: &str, member: &Member) -> Result<Vec<String>> {
        let value = entry_value(&self.tag(member), &member.username);
        let payload = wire::presence(PresenceKind::Joined, &member.key, &member.username);
        // Registered before the script runs, so that its JOINED cannot
        // pass the dispatcher unnoticed (`join_fence.rs`).
        let fence = self.join_fences.expect(room, &member.key);
        let values: Vec<String> = self
            .enter
            .evalsha_with_reload(
                &self.client,
                self.room_state_keys(room),
                vec![member.key.clone(), value, self.keys.channel(room), payload],
            )
            .await
            .map_err(unavailable)?;
        let Some((changed, values)) = values.split_first() else {
            return Err(BridgeError::Corrupt(
                "the enter script answered nothing".into(),
            ));
        };
        if changed == "2" {
            // The script published this member's JOINED: answer the join
            // only once this gateway has handed it to its members, so that a
            // member who joins after this one's Joined never gets it late.
            fence.wait(JOIN_FENCE_WAIT).await;
        }
        // This session's entry already there (a resume re-tagged it) was
        // indexed when it was written: a resumed join costs one round trip
        // less, which a reconnect storm multiplies by every returning member.
        if changed != "0" {
            self.index_presence(
                &member.session_id,
                &[room.to_owned()],
                Some((room, values.len())),
            )
            .await?;
        }
        let mut names: Vec<String> = values
            .iter()
            .map(|v| Holder::parse(v).map_or("", |h| h.display).to_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    pub(super) async fn claim(&self, member: &Member, resume: &TokenHash) -> Result<bool> {
        let key = self.keys.name(&member.key);
        let tag = self.tag(member);
        // The display name rides along for the admin user list.
        let value = claim_value(&tag, &member.username, resume);
        let set: Option<String> = self
            .client
            .set(&key, value.as_str(), None, Some(SetOptions::NX), false)
            .await
            .map_err(unavailable)?;
        if set.is_none() {
            let holder: Option<String> = self.client.get(&key).await.map_err(unavailable)?;
            if !holder.is_some_and(|holder| holder.starts_with(&tag)) {
                return Ok(false);
            }
        }
        let _: () = self
            .client
            .sadd(
                self.keys.gateway_names(&self.config.instance),
                member.key.as_str(),
            )
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    /// See [`Presence::resume_username`]. The presented token's hash is
    /// compared here, in constant time; the claim then changes hands only if
    /// it is still exactly what was compared (compare-and-set).
    pub(super) async fn resume(
        &self,
        member: &Member,
        presented: &TokenHash,
        resume: &TokenHash,
    ) -> Result<Option<Resumed>> {
        let name = self.keys.name(&member.key);
        let Some(current) = self
            .client
            .get::<Option<String>, _>(&name)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let Some(holder) = Holder::parse(&current) else {
            return Ok(None);
        };
        let matches = holder
            .resume
            .and_then(TokenHash::from_stored)
            .is_some_and(|stored| stored.matches(presented));
        if !matches || holder.session == member.session_id {
            return Ok(None);
        }
        let previous_tag = tag_of(holder.instance, holder.session);
        let tag = self.tag(member);
        let swapped: u64 = self
            .swap
            .evalsha_with_reload(
                &self.client,
                vec![name],
                vec![current.clone(), claim_value(&tag, &member.username, resume)],
            )
            .await
            .map_err(unavailable)?;
        if swapped != 1 {
            return Ok(None); // Taken over (or freed) by someone else meanwhile.
        }
        // Two more round trips whatever the number of rooms: index the name
        // and read the earlier session's rooms, then move its presence
        // entries there to this session (silently).
        let candidates = self.index_name_read_rooms(member, holder.session).await?;
        let rooms = self
            .take_presence(member, holder, &previous_tag, candidates)
            .await?;
        Ok(Some(Resumed {
            previous_session: holder.session.to_owned(),
            rooms,
        }))
    }

    /// Indexes `member`'s name for this instance and reads the rooms where
    /// the session it takes over was present, in one round trip.
    async fn index_name_read_rooms(
        &self,
        member: &Member,
        previous_session: &str,
    ) -> Result<Vec<String>> {
        let pipeline = self.client.pipeline();
        let queued = async {
            let _: () = pipeline
                .sadd(
                    self.keys.gateway_names(&self.config.instance),
                    member.key.as_str(),
                )
                .await?;
            pipeline
                .smembers::<(), _>(self.keys.session_rooms(previous_session))
                .await
        };
        queued.await.map_err(unavailable)?;
        let mut replies = pipeline.try_all::<Value>().await.into_iter().skip(1);
        match replies.next() {
            Some(reply) => reply
                .map_err(unavailable)?
                .convert()
                .map_err(|e| BridgeError::Corrupt(format!("session rooms: {e}"))),
            None => Ok(Vec::new()),
        }
    }

    /// Moves the presence entries of `previous` (tagged `previous_tag`) in
    /// `candidates` to `member`, in one round trip, and tells the earlier
    /// session's gateway. Returns the rooms whose entry moved, sorted.
    async fn take_presence(
        &self,
        member: &Member,
        previous: Holder<'_>,
        previous_tag: &str,
        candidates: Vec<String>,
    ) -> Result<Vec<String>> {
        // One more round trip: re-tag the entries, index them for this
        // session, forget the earlier one's index, and tell its gateway to
        // close it (4002). Rooms whose entry did not move (the earlier
        // session had left them) may stay indexed: the index is a superset
        // of the entries (reaping and takeovers check the entry's tag).
        let value = entry_value(&self.tag(member), &member.username);
        let replace = control::Control::Replace {
            key: member.key.clone(),
            session_id: previous.session.to_owned(),
        };
        let pipeline = self.client.pipeline();
        let queued = async {
            for room in &candidates {
                // EVAL (the text, not its hash): a pipeline cannot reload a
                // script Redis lost; Redis caches the compiled script anyway.
                let _: () = pipeline
                    .custom(
                        // The room's slot, given (see `publisher.rs`).
                        CustomCommand::new_static(
                            "EVAL",
                            ClusterHash::Custom(topology::slot_of(&self.keys.members(room))),
                            false,
                        ),
                        vec![
                            Value::from_static_str(scripts::RETAG),
                            Value::from(2),
                            Value::from(self.keys.members(room)),
                            Value::from(self.keys.sessions(room)),
                            Value::from(member.key.as_str()),
                            Value::from(previous_tag),
                            Value::from(value.as_str()),
                        ],
                    )
                    .await?;
            }
            if !candidates.is_empty() {
                self.queue_index(&pipeline, &member.session_id, &candidates, None)
                    .await?;
            }
            let _: () = pipeline
                .del(self.keys.session_rooms(previous.session))
                .await?;
            self.queue_publish(&pipeline, self.keys.control(), self.sealed(&replace))
                .await
        };
        queued.await.map_err(unavailable)?;
        let mut replies = pipeline.try_all::<Value>().await.into_iter();
        let mut rooms = Vec::new();
        for room in candidates {
            let moved = replies
                .next()
                .ok_or_else(|| BridgeError::Corrupt("a re-tag went unanswered".into()))?
                .map_err(unavailable)?;
            if moved.as_u64() == Some(1) {
                rooms.push(room);
            }
        }
        for reply in replies {
            reply.map_err(unavailable)?;
        }
        rooms.sort();
        let mut local = self.local.lock();
        for room in &rooms {
            local
                .presence
                .insert((room.clone(), member.session_id.clone()), member.clone());
        }
        Ok(rooms)
    }
}

#[async_trait]
impl Presence for RedisBridge {
    async fn typing(&self, room: &str, member: &Member, active: bool) -> Result<()> {
        let inner = &self.inner;
        inner.check()?;
        inner
            .publish_on(
                inner.keys.channel(room),
                wire::typing(active, &member.key, &member.username),
            )
            .await
            .map_err(unavailable)
    }

    async fn ban_of(&self, key: &str) -> Result<Option<Ban>> {
        self.inner.check()?;
        self.inner.ban_of(key).await
    }

    async fn claim_username(&self, member: &Member, resume: &TokenHash) -> Result<bool> {
        self.inner.check()?;
        let claimed = self.inner.claim(member, resume).await?;
        if claimed {
            self.inner
                .local
                .lock()
                .names
                .insert(member.session_id.clone(), (member.clone(), resume.clone()));
        }
        Ok(claimed)
    }

    async fn resume_username(
        &self,
        member: &Member,
        presented: &TokenHash,
        resume: &TokenHash,
    ) -> Result<Option<Resumed>> {
        self.inner.check()?;
        let resumed = self.inner.resume(member, presented, resume).await?;
        if resumed.is_some() {
            self.inner
                .local
                .lock()
                .names
                .insert(member.session_id.clone(), (member.clone(), resume.clone()));
        }
        Ok(resumed)
    }

    async fn release_username(&self, member: &Member) -> Result<()> {
        let inner = &self.inner;
        inner.local.lock().names.remove(&member.session_id);
        inner.check()?;
        let released: u64 = inner
            .delete_if_prefix
            .evalsha_with_reload(
                &inner.client,
                vec![inner.keys.name(&member.key)],
                vec![inner.tag(member)],
            )
            .await
            .map_err(unavailable)?;
        // Only when the name was still ours: after a resume on this same
        // gateway, the index entry belongs to the session that took it.
        if released == 1 {
            let _: () = inner
                .client
                .srem(
                    inner.keys.gateway_names(&inner.config.instance),
                    member.key.as_str(),
                )
                .await
                .map_err(unavailable)?;
        }
        let _: () = inner
            .client
            .del(inner.keys.session_rooms(&member.session_id))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn enter_room(&self, room: &str, member: &Member) -> Result<Vec<String>> {
        self.inner.check()?;
        let names = self.inner.enter(room, member).await?;
        self.inner
            .local
            .lock()
            .presence
            .insert((room.to_owned(), member.session_id.clone()), member.clone());
        Ok(names)
    }

    async fn leave_room(&self, room: &str, member: &Member) -> Result<()> {
        let inner = &self.inner;
        inner
            .local
            .lock()
            .presence
            .remove(&(room.to_owned(), member.session_id.clone()));
        inner.check()?;
        let payload = wire::presence(PresenceKind::Left, &member.key, &member.username);
        let left: i64 = inner
            .leave
            .evalsha_with_reload(
                &inner.client,
                inner.room_state_keys(room),
                vec![
                    member.key.clone(),
                    inner.tag(member),
                    inner.keys.channel(room),
                    payload,
                    inner.room_ttl_ms(),
                ],
            )
            .await
            .map_err(unavailable)?;
        if left >= 0 {
            count_members(&inner.client, &inner.keys, room, left)
                .await
                .map_err(unavailable)?;
        }
        let _: () = inner
            .client
            .srem(inner.keys.session_rooms(&member.session_id), room)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn rooms(&self, limit: usize) -> Result<Vec<RoomSummary>> {
        let inner = &self.inner;
        inner.check()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The ranking, then the true counts of those rooms: two round trips
        // whatever the number of rooms. A count the index got wrong (a
        // gateway died between a presence script and its index write) is
        // corrected on the way.
        let ranked: Vec<String> = inner
            .client
            .zrevrange(inner.keys.room_members(), 0, limit as i64 - 1, false)
            .await
            .map_err(unavailable)?;
        let pipeline = inner.client.pipeline();
        for room in &ranked {
            let _: () = pipeline
                .hlen(inner.keys.members(room))
                .await
                .map_err(unavailable)?;
        }
        let counts = pipeline.try_all::<u64>().await;
        let mut out = Vec::with_capacity(ranked.len());
        for (room, count) in ranked.into_iter().zip(counts) {
            let count = count.map_err(unavailable)?;
            if count > 0 {
                out.push(RoomSummary {
                    name: room,
                    member_count: count as u32,
                    last_message_id: None,
                    last_message_at_ms: 0,
                });
            } else {
                count_members(&inner.client, &inner.keys, &room, 0)
                    .await
                    .map_err(unavailable)?;
            }
        }
        out.sort_by(|a, b| {
            b.member_count
                .cmp(&a.member_count)
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(out)
    }
}

/// Sends a pipeline; fails if any of its commands failed.
async fn run_pipeline(pipeline: &Pipeline<Client>) -> Result<()> {
    for reply in pipeline.try_all::<Value>().await {
        reply.map_err(unavailable)?;
    }
    Ok(())
}

/// Writes a room's member count into the entry screen's ranking (removes
/// the room at 0). Works on the client or inside a pipeline.
pub(super) async fn count_members<C: SortedSetsInterface + Sync>(
    client: &C,
    keys: &Keys,
    room: &str,
    count: i64,
) -> Result<(), fred::error::Error> {
    if count > 0 {
        client
            .zadd(
                keys.room_members(),
                None,
                None,
                false,
                false,
                (count as f64, room),
            )
            .await
    } else {
        client.zrem(keys.room_members(), room).await
    }
}
