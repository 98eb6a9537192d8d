//! The publisher: the task (one per lane, `lanes.rs`) that sends submitted
//! messages to Redis, in submission order, as pipelines of one PUBLISH
//! script call per room.

use chat_proto::rules::DEDUPE_WINDOW;

use super::*;

/// Messages waiting for the publisher task before `submit` waits for room.
pub(super) const PUBLISH_QUEUE: usize = 4096;
/// Messages the publisher sends to Redis in one pipeline at most.
pub(super) const PUBLISH_BATCH: usize = 256;

/// A submitted message, ready for the PUBLISH script, and where its outcome goes.
pub(super) struct PublishJob {
    pub(super) room: String,
    /// The room's hash slot (Redis Cluster): where its script call goes.
    pub(super) slot: u16,
    /// The idempotency key's Redis key.
    pub(super) dedupe: String,
    /// Whether the message has a `client_msg_id` (only then is the dedupe key kept).
    pub(super) idempotent: bool,
    /// The message as the script stores and publishes it (`wire::encode_message_body`).
    pub(super) body: Bytes,
    pub(super) reply: oneshot::Sender<Result<Accepted>>,
}

impl PublishJob {
    /// Encodes the message once, on the submitter's task rather than the
    /// single publisher's, moving its strings into the body.
    pub(super) fn new(
        keys: &Keys,
        msg: NewMessage,
        reply: oneshot::Sender<Result<Accepted>>,
    ) -> Self {
        let dedupe = keys.dedupe(&msg.room, &msg.sender_key, &msg.client_msg_id);
        let idempotent = !msg.client_msg_id.is_empty();
        let body = Bytes::from(wire::encode_message_body(&ChatMessage {
            username: msg.username,
            text: msg.text,
            client_msg_id: msg.client_msg_id,
            system: msg.system,
            ..Default::default()
        }));
        Self {
            slot: topology::slot_of(&keys.stream(&msg.room)),
            room: msg.room,
            dedupe,
            idempotent,
            body,
            reply,
        }
    }
}

/// A lane's task: sends its submitted messages to Redis, in submission order.
/// Whatever queued up while one pipeline was out goes in the next, so a busy
/// gateway pays one round trip for many messages and an idle one sends each
/// message at once.
/// `client` is the lane's connection: the one Redis, or the lane's primary.
pub(super) async fn run(inner: Arc<Inner>, client: Client, mut queue: mpsc::Receiver<PublishJob>) {
    let mut jobs = Vec::with_capacity(PUBLISH_BATCH);
    while queue.recv_many(&mut jobs, PUBLISH_BATCH).await > 0 {
        inner.publish_batch(&client, &mut jobs).await;
    }
}

impl Inner {
    /// Sends every job to Redis in one pipeline (one PUBLISH script call
    /// per room and chunk, in submission order within the room) and answers
    /// each job. Nothing is retried here: a message whose outcome is unknown
    /// (the connection dropped) is answered UNAVAILABLE, and the client's
    /// retry with the same `client_msg_id` is deduplicated.
    pub(super) async fn publish_batch(&self, client: &Client, jobs: &mut Vec<PublishJob>) {
        let calls = script_calls(jobs);
        let pipeline = client.pipeline();
        let queued = async {
            // Loaded in the same pipeline ahead of its uses, so that an
            // EVALSHA finds the script even just after Redis restarted
            // empty or a replica took over. Re-loading a known script is a
            // hash and a lookup.
            let _: () = pipeline
                .custom(
                    CustomCommand::new_static("SCRIPT", ClusterHash::Random, false),
                    vec![
                        Value::from_static_str("LOAD"),
                        // The text the script was made from (on a cluster, SPUBLISH).
                        Value::String(self.publish.lua().cloned().unwrap_or_default()),
                    ],
                )
                .await?;
            for call in &calls {
                let _: () = pipeline
                    .custom(
                        // The room's hash slot, given: fred routes a custom
                        // command by its first string (here the script's hash)
                        // unless the slot is given.
                        CustomCommand::new_static(
                            "EVALSHA",
                            ClusterHash::Custom(jobs[call[0]].slot),
                            false,
                        ),
                        self.publish_args(jobs, call),
                    )
                    .await?;
            }
            Ok::<_, fred::error::Error>(())
        }
        .await;
        let mut outcomes: Vec<Option<Result<Accepted>>> = Vec::new();
        outcomes.resize_with(jobs.len(), || None);
        match queued {
            Err(e) => outcomes.fill_with(|| Some(Err(unavailable(e.clone())))),
            Ok(()) => {
                let results = pipeline.try_all::<Value>().await;
                if results.len() != 1 + calls.len() {
                    // The pipeline as a whole failed (a timeout, say): one error.
                    let e = results.into_iter().find_map(Result::err).map_or_else(
                        || BridgeError::Unavailable("no reply from redis".into()),
                        unavailable,
                    );
                    outcomes.fill_with(|| Some(Err(e.clone())));
                    return self.answer(jobs, outcomes);
                }
                let mut results = results.into_iter();
                let _loaded = results.next();
                for call in &calls {
                    let replies = match results.next() {
                        Some(Ok(value)) => accepted_all(value, call.len()),
                        Some(Err(e)) => {
                            if pubsub::is_redirect(&e) {
                                // The room's slot moved: read the map again.
                                self.topology_hint.notify_one();
                            }
                            Err(unavailable(e))
                        }
                        None => Err(BridgeError::Unavailable("no reply from redis".into())),
                    };
                    match replies {
                        Ok(replies) => {
                            for (&i, reply) in call.iter().zip(replies) {
                                outcomes[i] = Some(reply);
                            }
                        }
                        Err(e) => {
                            for &i in call {
                                outcomes[i] = Some(Err(e.clone()));
                            }
                        }
                    }
                }
            }
        }
        self.answer(jobs, outcomes);
    }

    /// Sends each job its outcome (and notes the rooms of accepted ones for
    /// the activity index, `activity.rs`).
    fn answer(&self, jobs: &mut Vec<PublishJob>, outcomes: Vec<Option<Result<Accepted>>>) {
        self.note_activity(
            jobs.iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| matches!(outcome, Some(Ok(_))))
                .map(|(job, _)| job.room.as_str()),
        );
        for (job, outcome) in jobs.drain(..).zip(outcomes) {
            self.release(job.slot);
            let outcome = outcome
                .unwrap_or_else(|| Err(BridgeError::Unavailable("no reply from redis".into())));
            // The submitter may be gone (its connection closed); the
            // message stands either way.
            let _ = job.reply.send(outcome);
        }
    }

    /// EVALSHA's arguments for the jobs at `call` (all of one room).
    pub(super) fn publish_args(&self, jobs: &[PublishJob], call: &[usize]) -> Vec<Value> {
        let room = &jobs[call[0]].room;
        let history_len = self.config.history_len;
        let mut args = Vec::with_capacity(8 + 3 * call.len());
        args.push(Value::from(self.publish.sha1().clone()));
        args.push(Value::from((3 + call.len()) as i64));
        args.push(Value::from(self.keys.stream(room)));
        args.push(Value::from(self.keys.trimmed(room)));
        args.push(Value::from(self.keys.members(room)));
        for &i in call {
            args.push(Value::from(jobs[i].dedupe.as_str()));
        }
        args.push(Value::from(history_len as i64));
        args.push(Value::from(self.keys.channel(room)));
        args.push(Value::from((history_len / 64).max(1) as i64));
        args.push(Value::from(self.room_ttl_ms()));
        for &i in call {
            let job = &jobs[i];
            args.push(Value::from(if job.idempotent {
                DEDUPE_WINDOW.as_secs().to_string()
            } else {
                String::new()
            }));
            args.push(Value::Bytes(job.body.clone()));
        }
        args
    }
}

/// Messages per PUBLISH script call at most, so that one call does not hold
/// Redis (single-threaded) for long.
pub(super) const MESSAGES_PER_CALL: usize = 64;

/// The jobs grouped into script calls: by room, in submission order within
/// each room, at most [`MESSAGES_PER_CALL`] per call. Order across rooms is
/// free: each room has its own order.
pub(super) fn script_calls(jobs: &[PublishJob]) -> Vec<Vec<usize>> {
    let mut by_room: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut rooms: Vec<&str> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let room = job.room.as_str();
        by_room
            .entry(room)
            .or_insert_with(|| {
                rooms.push(room);
                Vec::new()
            })
            .push(i);
    }
    let mut calls = Vec::new();
    for room in rooms {
        let indices = by_room.remove(room).unwrap_or_default();
        calls.extend(indices.chunks(MESSAGES_PER_CALL).map(<[usize]>::to_vec));
    }
    calls
}

/// The PUBLISH script's reply for `n` messages: {outcome, id or error} each.
pub(super) fn accepted_all(value: Value, n: usize) -> Result<Vec<Result<Accepted>>> {
    let flat: Vec<Value> = value
        .convert()
        .map_err(|e| BridgeError::Corrupt(format!("publish reply: {e}")))?;
    if flat.len() != 2 * n {
        return Err(BridgeError::Corrupt(format!(
            "publish reply has {} values for {n} messages",
            flat.len()
        )));
    }
    let mut flat = flat.into_iter();
    let mut out = Vec::with_capacity(n);
    while let (Some(outcome), Some(id)) = (flat.next(), flat.next()) {
        out.push(accepted(outcome, id));
    }
    Ok(out)
}

/// One message's part of the PUBLISH script's reply.
pub(super) fn accepted(outcome: Value, id: Value) -> Result<Accepted> {
    let corrupt = |e: fred::error::Error| BridgeError::Corrupt(format!("publish reply: {e}"));
    let outcome: i64 = outcome.convert().map_err(corrupt)?;
    let id: String = id.convert().map_err(corrupt)?;
    if outcome == 2 {
        // Refused by Redis (out of memory, say); nothing was stored.
        return Err(BridgeError::Unavailable(format!(
            "redis refused the message: {id}"
        )));
    }
    let duplicate = outcome;
    let id: MessageId = id
        .parse()
        .map_err(|_| BridgeError::Corrupt(format!("stream id {id:?}")))?;
    Ok(Accepted {
        id,
        sent_at_ms: id.ms,
        duplicate: duplicate == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_message(room: &str) -> NewMessage {
        NewMessage {
            room: room.into(),
            sender_key: "k".into(),
            username: "u".into(),
            text: "t".into(),
            client_msg_id: String::new(),
            system: false,
        }
    }

    fn job(room: &str) -> PublishJob {
        PublishJob::new(&Keys::new("chat"), new_message(room), oneshot::channel().0)
    }

    /// Records what the bridge hands to its sink.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<ChatMessage>>);

    impl EventSink for Recorder {
        fn deliver(&self, event: BridgeEvent) {
            if let BridgeEvent::Message(message) = event {
                self.0.lock().push(message.decode().unwrap());
            }
        }
    }

    fn message(text: &str, client_msg_id: &str) -> NewMessage {
        NewMessage {
            client_msg_id: client_msg_id.into(),
            text: text.into(),
            ..new_message("lobby")
        }
    }

    /// Messages submitted back to back go to Redis in one script call (this test runtime
    /// has one thread, so the publisher task runs only once all are queued). Within that
    /// call a retry of a `client_msg_id` finds the first one's key, and the accepted
    /// messages reach the sink once each, in order, from the one `B` payload.
    #[tokio::test]
    async fn one_script_call_dedupes_within_itself_and_delivers_in_order() {
        let redis = chat_test_support::RedisServer::start().await.unwrap();
        let recorder = Arc::new(Recorder::default());
        let bridge = RedisBridge::connect(
            RedisConfig {
                url: redis.url(),
                cluster: false,
                tls_ca: None,
                prefix: "chat".into(),
                gateway_id: "gw-test".into(),
                instance: "gw-test~1".into(),
                address: "127.0.0.1:0".into(),
                bound: None,
                history_len: 100,
                room_ttl: Duration::from_secs(3600),
                cluster_secret: None,
            },
            recorder.clone(),
        )
        .await
        .unwrap();
        bridge.subscribe("lobby").await.unwrap();
        let mut pending = Vec::new();
        for (text, key) in [
            ("before", ""),
            ("once", "k1"),
            ("once again", "k1"),
            ("between", "k2"),
            ("once more", "k1"),
        ] {
            pending.push(bridge.submit(message(text, key)).await);
        }
        let mut outcomes = Vec::new();
        for outcome in pending {
            outcomes.push(outcome.await.unwrap());
        }
        let flags: Vec<bool> = outcomes.iter().map(|a| a.duplicate).collect();
        assert_eq!(flags, [false, false, true, false, true]);
        assert_eq!(outcomes[2].id, outcomes[1].id);
        assert_eq!(outcomes[4].id, outcomes[1].id);
        let calls = redis.command(&["INFO", "commandstats"]).await.unwrap();
        let chat_test_support::RespValue::Bulk(Some(stats)) = calls else {
            panic!("INFO answered {calls:?}")
        };
        let stats = String::from_utf8(stats).unwrap();
        assert!(
            stats.contains("cmdstat_evalsha:calls=1,"),
            "one script call for the batch: {stats}"
        );

        chat_test_support::eventually(Duration::from_secs(10), || async {
            recorder.0.lock().len() >= 3
        })
        .await;
        let texts: Vec<String> = recorder.0.lock().iter().map(|m| m.text.clone()).collect();
        assert_eq!(texts, ["before", "once", "between"]);
        let ids: Vec<String> = recorder.0.lock().iter().map(|m| m.id.clone()).collect();
        let accepted: Vec<String> = [0, 1, 3].map(|i| outcomes[i].id.to_string()).into();
        assert_eq!(ids, accepted);
    }

    #[test]
    fn script_calls_group_by_room_in_submission_order_and_chunk() {
        let mut jobs = Vec::new();
        for i in 0..(MESSAGES_PER_CALL + 3) {
            jobs.push(job(if i % 2 == 0 { "a" } else { "b" }));
        }
        jobs.push(job("c"));
        let calls = script_calls(&jobs);
        let evens: Vec<usize> = (0..MESSAGES_PER_CALL + 3).step_by(2).collect();
        let odds: Vec<usize> = (1..MESSAGES_PER_CALL + 3).step_by(2).collect();
        assert_eq!(calls, vec![evens, odds, vec![MESSAGES_PER_CALL + 3]]);

        let many: Vec<PublishJob> = (0..MESSAGES_PER_CALL * 2 + 1).map(|_| job("a")).collect();
        let calls = script_calls(&many);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            [MESSAGES_PER_CALL, MESSAGES_PER_CALL, 1]
        );
        let flat: Vec<usize> = calls.concat();
        assert_eq!(flat, (0..many.len()).collect::<Vec<_>>(), "in order");
    }
}
