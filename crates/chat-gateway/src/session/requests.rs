//! A session's answers to requests (Hello, Join, Leave, FetchHistory,
//! Typing, Ping; Send is `in_flight.rs`) and to commands queued on its
//! handle. Each handler asks `rules.rs` what the request means and whether
//! it is allowed, then carries it out against the bridge and the hub.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use chat_bridge::{Ban, Member, ResumeToken, TokenHash, RESUME_WINDOW};
use chat_proto::v1::{
    client_frame, server_frame, ChatMessage, ErrorCode, FetchHistory, Hello, HistoryPage, Join,
    Joined, Leave, Left, ServerFrame, Typing, Welcome,
};
use chat_proto::MessageId;
use tokio::time::Instant;

use super::rules::{self, Admission, JoinPlan, Rejection};
use super::Session;
use crate::conn::{close_code, ConnCommand};
use crate::state::now_ms;

impl Session {
    /// Answers one binary frame from the client.
    pub(super) async fn handle(&mut self, data: Bytes) {
        let request = rules::read_request(data);
        if !request.as_ref().is_ok_and(rules::Request::is_send) {
            // Replies keep the order of requests: the Sends before this
            // request are answered first.
            self.settle().await;
        }
        let rules::Request { r, kind } = match request {
            Ok(request) => request,
            Err((r, rejection)) => return self.reject(r, rejection),
        };
        match rules::admit(&kind, self.member.is_some()) {
            Admission::Refused(rejection) => return self.reject(r, rejection),
            Admission::RoomOp if !self.room_ops_bucket.try_take() => {
                return self.reject(r, rules::room_ops_limited())
            }
            Admission::Hello | Admission::RoomOp | Admission::Other => {}
        }
        match kind {
            client_frame::Kind::Hello(hello) => self.hello(r, hello).await,
            client_frame::Kind::Join(join) => self.join(r, join).await,
            client_frame::Kind::Leave(leave) => self.leave(r, leave).await,
            client_frame::Kind::Send(send) => self.send(r, send).await,
            client_frame::Kind::Typing(typing) => self.typing(r, typing).await,
            client_frame::Kind::Ping(ping) => {
                self.reply(r, server_frame::Kind::Pong(rules::pong(&ping, now_ms())));
            }
            client_frame::Kind::FetchHistory(fetch) => self.fetch_history(r, fetch).await,
        }
    }

    /// Claims the name (or takes it over with a resume token) and welcomes
    /// the session. With signed identities the token names the identity,
    /// which may hold several sessions: nothing is claimed, and an earlier
    /// session's presence stays continuous because it lingers
    /// (`RECONNECT_GRACE`) until this one has joined its rooms again.
    async fn hello(&mut self, r: u64, hello: Hello) {
        let Some(name) = self.who(r, &hello) else {
            return;
        };
        let member = Member {
            session_id: self.session_id.clone(),
            key: name.key,
            username: name.display,
        };
        // Kicks find connections by this key: set before the ban check, so a
        // ban stored after the check is answered by its kick, which now finds
        // this connection (the ban is stored before its kick is sent).
        self.conn.set_key(Arc::from(member.key.as_str()));
        let bridge = &self.shared.bridge;
        match crate::admin::bans::ban_of(bridge.as_ref(), &member).await {
            Ok(None) => {}
            Ok(Some(ban)) => return self.refuse_banned(r, &ban),
            Err(e) => return self.unavailable(r, &e),
        }
        // Never logged: only its hash leaves this function.
        let token = ResumeToken::generate();
        let mut resumed = None;
        let claims = !self.signed_identities();
        if claims && !hello.resume_token.is_empty() {
            let presented = TokenHash::of(&hello.resume_token);
            match bridge
                .resume_username(&member, &presented, token.hash())
                .await
            {
                Ok(taken) => resumed = taken,
                Err(e) => return self.unavailable(r, &e),
            }
        }
        if claims && resumed.is_none() {
            match bridge.claim_username(&member, token.hash()).await {
                Ok(true) => {}
                Ok(false) => return self.hello_refused(r, rules::name_taken(&member.username)),
                Err(e) => return self.unavailable(r, &e),
            }
        }
        if let Some(resumed) = resumed {
            tracing::debug!(previous = %resumed.previous_session, rooms = resumed.rooms.len(), "took over the earlier session of this client");
            self.shared.metrics.sessions_resumed.fetch_add(1, Relaxed);
            self.inherited = resumed.rooms.into_iter().collect();
            self.inherited_until =
                (!self.inherited.is_empty()).then(|| Instant::now() + RESUME_WINDOW);
        }
        self.key = Arc::from(member.key.as_str());
        tracing::debug!(identity = %self.identity(), username = %member.username, client = %hello.client, "welcomed");
        self.reply(
            r,
            server_frame::Kind::Welcome(Welcome {
                session_id: self.session_id.clone(),
                username: member.username.clone(),
                gateway_id: self.shared.gateway_id.clone(),
                server_time_ms: now_ms(),
                limits: Some(self.shared.limits),
                resume_token: token.secret().to_owned(),
            }),
        );
        self.member = Some(member);
    }

    /// Refuses the Hello of a banned identity as a kick: `Error KICKED`
    /// with the ban's reason, then close 4001 (after the error).
    fn refuse_banned(&mut self, r: u64, ban: &Ban) {
        tracing::debug!(user = %ban.key, "refused a banned user's Hello");
        self.error(r, ErrorCode::Kicked, ban.message());
        self.conn.close(close_code::KICKED);
    }

    /// Answers a refused Hello; past `--max-failed-hellos` the connection
    /// is closed (1008) after the answer.
    pub(super) fn hello_refused(&mut self, r: u64, rejection: Rejection) {
        self.reject(r, rejection);
        self.failed_hellos += 1;
        if rules::too_many_refused_hellos(self.failed_hellos, self.shared.config.max_failed_hellos)
        {
            self.close_for_policy("too many refused Hellos");
        }
    }

    /// Joins a room (or re-joins one, for a replay): subscribes, enters
    /// presence and reads the history, then hands the member over to live
    /// delivery with the `Joined` frame first (see `Hub::finish_join`).
    async fn join(&mut self, r: u64, join: Join) {
        let plan = match rules::plan_join(&join, &self.rooms, self.shared.limits.max_rooms) {
            Ok(plan) => plan,
            Err(rejection) => return self.reject(r, rejection),
        };
        if let Err(rejection) = self.room_allowed(&plan.room) {
            return self.reject(r, rejection);
        }
        let bridge = self.shared.bridge.clone();
        let member = self.member().clone();
        if !plan.rejoin {
            if let Err(e) = bridge.subscribe(&plan.room).await {
                return self.unavailable(r, &e);
            }
        }
        self.shared
            .hub
            .begin_join(&plan.room, &self.conn, &self.key);
        match self.enter(&plan, &member).await {
            Ok((members, history, history_truncated)) => {
                let client_has = rules::client_has(&history, plan.since);
                let room = plan.room;
                let joined = crate::wire::encode(&ServerFrame {
                    r#ref: r,
                    kind: Some(server_frame::Kind::Joined(Joined {
                        room: room.clone(),
                        members,
                        history,
                        history_truncated,
                    })),
                });
                self.shared
                    .hub
                    .finish_join(&room, self.conn.id, Some(joined), client_has);
                self.inherited.remove(&room);
                self.rooms.insert(room);
            }
            Err(e) => {
                let room = &plan.room;
                if plan.rejoin {
                    // Still a member: go back to live delivery from where it was.
                    self.shared
                        .hub
                        .finish_join(room, self.conn.id, None, MessageId::ZERO);
                } else {
                    self.inherited.remove(room);
                    self.shared.hub.remove(room, self.conn.id);
                    let _ = bridge.leave_room(room, &member).await;
                    let _ = bridge.unsubscribe(room).await;
                }
                self.unavailable(r, &e);
            }
        }
    }

    /// Enters the room's presence and reads what the Joined replays: the
    /// members, the history and whether it was cut short. Both come after
    /// the subscription, which is what makes the replay gapless; they are
    /// independent, so they are one wait.
    async fn enter(
        &self,
        plan: &JoinPlan,
        member: &Member,
    ) -> chat_bridge::Result<(Vec<String>, Vec<ChatMessage>, bool)> {
        let bridge = &self.shared.bridge;
        let history = async {
            match plan.since {
                Some(since) => {
                    let replay = bridge.replay_after(&plan.room, since).await?;
                    Ok((replay.messages, replay.truncated))
                }
                None => Ok((bridge.recent(&plan.room, plan.history_limit).await?, false)),
            }
        };
        let (members, (history, truncated)) =
            tokio::try_join!(bridge.enter_room(&plan.room, member), history)?;
        Ok((members, history, truncated))
    }

    async fn leave(&mut self, r: u64, leave: Leave) {
        let room = match rules::joined(&self.rooms, &leave.room) {
            Ok(room) => room,
            Err(rejection) => return self.reject(r, rejection),
        };
        self.leave_room(&room).await;
        self.reply(r, server_frame::Kind::Left(Left { room }));
    }

    /// Leaves a room locally and in the cluster (best effort on the cluster:
    /// a member that cannot be removed now is removed by presence expiry).
    pub(super) async fn leave_room(&mut self, room: &str) {
        self.rooms.remove(room);
        self.shared.hub.remove(room, self.conn.id);
        let bridge = &self.shared.bridge;
        if let Err(e) = bridge.leave_room(room, self.member()).await {
            tracing::warn!(error = %e, room, "leaving room in the cluster failed");
        }
        if let Err(e) = bridge.unsubscribe(room).await {
            tracing::warn!(error = %e, room, "unsubscribing failed");
        }
    }

    async fn typing(&mut self, r: u64, typing: Typing) {
        let room = match rules::joined(&self.rooms, &typing.room) {
            Ok(room) => room,
            Err(rejection) => return self.reject(r, rejection),
        };
        // Ephemeral: a flood is dropped silently rather than fanned out.
        if !self.typing_bucket.try_take() {
            return;
        }
        if let Err(e) = self
            .shared
            .bridge
            .typing(&room, self.member(), typing.active)
            .await
        {
            tracing::debug!(error = %e, "typing notice not delivered");
        }
    }

    async fn fetch_history(&mut self, r: u64, fetch: FetchHistory) {
        let (room, before, limit) = match rules::plan_history(&fetch, &self.rooms) {
            Ok(plan) => plan,
            Err(rejection) => return self.reject(r, rejection),
        };
        match self
            .shared
            .bridge
            .history_before(&room, before, limit)
            .await
        {
            Ok(page) => self.reply(
                r,
                server_frame::Kind::History(HistoryPage {
                    room,
                    messages: page.messages,
                    has_more: page.has_more,
                }),
            ),
            Err(e) => self.unavailable(r, &e),
        }
    }

    /// Carries out a command queued on the connection's handle.
    pub(super) async fn command(&mut self, command: ConnCommand) {
        match command {
            ConnCommand::LeaveRoom(room) => {
                if !self.rooms.contains(&room) {
                    return;
                }
                tracing::debug!(room, "removed from a room by an operator");
                self.leave_room(&room).await;
                self.reply(0, server_frame::Kind::Left(Left { room }));
            }
        }
    }
}
