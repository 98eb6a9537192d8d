//! The whole system as users run it: a real redis-server, three gateway
//! processes and chat-lb in front. Clients connect through chat-lb only.
//!
//! chat-lb's binary is found next to the gateway's (scripts/test.sh builds
//! the whole workspace before running tests).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chat_client::{Client, ClientError};
use chat_proto::v1::{server_frame, ErrorCode, ServerFrame};
use chat_proto::MessageId;
use chat_test_support::{eventually, BackendKind, Balancer, Cluster};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
const ROOM: &str = "front";

/// chat-lb in front of the cluster, once every gateway answers its health check.
async fn balancer(cluster: &Cluster) -> Balancer {
    for gateway in cluster.gateways() {
        eventually(Duration::from_secs(10), || async {
            gateway
                .get("/healthz")
                .await
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        })
        .await;
    }
    let backends: Vec<_> = cluster.gateways().iter().map(|g| g.addr()).collect();
    Balancer::start(BIN, &backends, &[])
        .await
        .expect("starting chat-lb")
}

fn message_of(frame: &ServerFrame) -> Option<(MessageId, String)> {
    match &frame.kind {
        Some(server_frame::Kind::Message(m)) => Some((m.id.parse().unwrap(), m.text.clone())),
        _ => None,
    }
}

/// A member that behaves like the web client: it remembers the last id it
/// displayed, and after a disconnect it reconnects through the balancer,
/// resumes with `since_id` and re-sends what was not acknowledged.
struct Resilient {
    url: String,
    name: String,
    client: Client,
    gateway: String,
    shown: Vec<(MessageId, String)>,
    reconnects: usize,
}

impl Resilient {
    async fn join(url: &str, name: &str) -> Self {
        let (client, gateway) = Self::connect(url, name).await;
        let mut me = Self {
            url: url.to_owned(),
            name: name.to_owned(),
            client,
            gateway,
            shown: Vec::new(),
            reconnects: 0,
        };
        let joined = me.client.join(ROOM).await.unwrap();
        me.show(
            joined
                .history
                .iter()
                .map(|m| (m.id.parse().unwrap(), m.text.clone())),
        );
        me
    }

    /// Hello through the balancer; the name of a killed session frees within 20 s.
    async fn connect(url: &str, name: &str) -> (Client, String) {
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            let attempt = async {
                let mut client = Client::connect(url).await?;
                let welcome = client.hello(name).await?;
                Ok::<_, ClientError>((client, welcome.gateway_id))
            };
            match attempt.await {
                Ok(done) => return done,
                Err(e) if Instant::now() < deadline => {
                    // Back off as the web client does.
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{name} could not reconnect: {e}"),
            }
        }
    }

    fn last_shown(&self) -> Option<MessageId> {
        self.shown.last().map(|(id, _)| *id)
    }

    fn show(&mut self, messages: impl IntoIterator<Item = (MessageId, String)>) {
        for (id, text) in messages {
            if self.last_shown().is_some_and(|last| id <= last) {
                continue; // The web client drops replays it already shows; count none here.
            }
            self.shown.push((id, text));
        }
    }

    fn drain_events(&mut self) {
        while let Some(frame) = self.client.try_next_event() {
            let message = message_of(&frame);
            self.show(message);
        }
    }

    async fn reconnect(&mut self) {
        self.drain_events();
        let (client, gateway) = Self::connect(&self.url, &self.name).await;
        self.client = client;
        self.gateway = gateway;
        self.reconnects += 1;
        let since = self
            .last_shown()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let joined = self.client.join_with(ROOM, &since, 0).await.unwrap();
        let replay: Vec<_> = joined
            .history
            .iter()
            .map(|m| (m.id.parse().unwrap(), m.text.clone()))
            .collect();
        let before = self.shown.len();
        self.show(replay.clone());
        assert_eq!(
            self.shown.len() - before,
            replay.len(),
            "the replay after since_id repeats nothing"
        );
    }

    /// Sends until acknowledged, reconnecting and re-sending with the same key.
    async fn send(&mut self, text: &str) -> MessageId {
        let key = format!("{}-{text}", self.name);
        loop {
            match self.client.send_with_id(ROOM, text, &key).await {
                Ok(ack) => {
                    self.drain_events();
                    return ack.id.parse().unwrap();
                }
                Err(ClientError::Server {
                    code: ErrorCode::Unavailable,
                    ..
                }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => self.reconnect().await,
            }
        }
    }

    /// Reads until every id in `expected` is shown.
    async fn catch_up(&mut self, expected: &BTreeSet<MessageId>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !expected
            .iter()
            .all(|id| self.shown.iter().any(|(s, _)| s == id))
        {
            assert!(
                Instant::now() < deadline,
                "{} is missing messages",
                self.name
            );
            match self
                .client
                .next_event_timeout(Duration::from_millis(500))
                .await
            {
                Ok(Some(frame)) => {
                    let message = message_of(&frame);
                    self.show(message);
                }
                Ok(None) => {}
                Err(_) => self.reconnect().await,
            }
        }
    }
}

async fn cluster() -> Cluster {
    Cluster::start(
        BIN,
        3,
        BackendKind::Redis,
        &[
            "--messages-per-second",
            "10000",
            "--message-burst",
            "10000",
            "--drain-timeout-ms",
            "3000",
        ],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn clients_through_the_balancer_survive_a_killed_gateway() {
    let mut cluster = cluster().await;
    let lb = balancer(&cluster).await;

    // Round-robin spreads clients over all three gateways.
    let mut seen = HashSet::new();
    for i in 0..6 {
        let mut client = Client::connect(&lb.ws_url()).await.unwrap();
        seen.insert(client.hello(&format!("probe{i}")).await.unwrap().gateway_id);
    }
    assert_eq!(seen.len(), 3, "clients landed on {seen:?}");

    let mut ann = Resilient::join(&lb.ws_url(), "ann").await;
    let mut ben = Resilient::join(&lb.ws_url(), "ben").await;
    while ben.gateway == ann.gateway {
        ben = Resilient::join(
            &lb.ws_url(),
            &format!("ben{}", ben.reconnects + ann.shown.len() + 1),
        )
        .await;
    }
    let ann_gateway = cluster
        .gateways()
        .iter()
        .position(|g| g.id() == ann.gateway)
        .unwrap();

    let mut acked = BTreeSet::new();
    for i in 0..40 {
        acked.insert(ann.send(&format!("a{i}")).await);
        acked.insert(ben.send(&format!("b{i}")).await);
        if i == 15 {
            cluster.gateway_mut(ann_gateway).sigkill().await.unwrap();
        }
    }
    ann.catch_up(&acked).await;
    ben.catch_up(&acked).await;

    assert!(ann.reconnects >= 1, "ann's gateway was killed");
    assert_ne!(
        cluster.gateway(ann_gateway).id(),
        ann.gateway,
        "ann now talks to another gateway"
    );
    let ids = |m: &Resilient| m.shown.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    assert_eq!(ids(&ann), ids(&ben), "both show the same sequence");
    assert_eq!(
        ids(&ann),
        acked.iter().copied().collect::<Vec<_>>(),
        "complete: every acked message, once, in order"
    );
}

#[tokio::test]
async fn a_draining_gateway_tells_every_client_to_reconnect_before_closing() {
    let cluster = cluster().await;
    let lb = balancer(&cluster).await;
    let mut clients = Vec::new();
    for i in 0..9 {
        let mut client = Client::connect(&lb.ws_url()).await.unwrap();
        let gateway = client.hello(&format!("d{i}")).await.unwrap().gateway_id;
        client.join(ROOM).await.unwrap();
        clients.push((client, gateway));
    }
    let target = cluster.gateway(0);
    let on_target = clients.iter().filter(|(_, g)| g == target.id()).count();
    assert!(on_target >= 1);
    target.sigterm().unwrap();

    for (client, gateway) in clients.iter_mut().filter(|(_, g)| g == target.id()) {
        client.set_timeout(Duration::from_secs(10));
        let mut got_reconnect = false;
        loop {
            match client.next_event_timeout(Duration::from_secs(10)).await {
                Ok(Some(ServerFrame {
                    kind: Some(server_frame::Kind::Reconnect(r)),
                    ..
                })) => {
                    assert!(
                        r.after_ms <= 1500,
                        "after_ms within the first half of the 3 s deadline"
                    );
                    got_reconnect = true;
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("no Reconnect from draining {gateway}"),
                Err(_) => break,
            }
        }
        assert!(got_reconnect, "the connection closed before a Reconnect");
        let close = client.close_info().cloned();
        assert_eq!(
            close.map(|c| c.code),
            Some(1001),
            "closed at the deadline with 1001"
        );
    }

    // New clients keep working through the balancer, on the other gateways.
    eventually(Duration::from_secs(10), || async {
        let mut client = Client::connect(&lb.ws_url()).await.ok()?;
        let welcome = client.hello("after-drain").await.ok()?;
        (welcome.gateway_id != target.id()).then_some(())
    })
    .await;
}
