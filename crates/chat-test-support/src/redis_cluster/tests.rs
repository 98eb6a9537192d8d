//! The cluster harness against real redis-server processes: forming,
//! `CLUSTER KEYSLOT`, migrating a slot, failing over a killed primary.

use std::time::{Duration, Instant};

use super::*;
use crate::try_eventually;

/// Generous bound on cluster waits in these tests (2 shared cores, several
/// clusters at once).
const WAIT: Duration = Duration::from_secs(30);

fn bulk(s: &str) -> RespValue {
    RespValue::Bulk(Some(s.as_bytes().to_vec()))
}

fn ok() -> RespValue {
    RespValue::Simple("OK".into())
}

async fn start() -> RedisCluster {
    if !RedisServer::binary().exists() {
        panic!("{}", HarnessError::RedisMissing(RedisServer::binary()));
    }
    let started = Instant::now();
    let cluster = RedisCluster::start().await.unwrap();
    eprintln!("redis cluster formed in {:?}", started.elapsed());
    cluster
}

#[tokio::test]
async fn starts_with_three_primaries_each_with_one_replica() {
    let cluster = start().await;
    assert_eq!(cluster.len(), 6);
    assert_eq!(cluster.primaries().await.unwrap(), vec![0, 1, 2]);
    for primary in 0..3 {
        assert_eq!(
            cluster.replica_of(primary).await.unwrap(),
            Some(primary + 3)
        );
        assert_eq!(
            cluster.primary_of(primary + 3).await.unwrap(),
            Some(primary)
        );
        assert_eq!(cluster.primary_of(primary).await.unwrap(), None);
    }
    for (i, seed) in cluster.seeds().iter().enumerate() {
        let port = cluster.node(i).port();
        assert!(
            port < 55_536,
            "node {i} on port {port}: no room for its bus port"
        );
        assert_eq!(seed, &format!("redis://127.0.0.1:{port}"));
        let info = cluster.command(i, &["CLUSTER", "INFO"]).await.unwrap();
        let RespValue::Bulk(Some(info)) = info else {
            panic!("{info:?}")
        };
        let info = String::from_utf8(info).unwrap();
        assert!(info.contains("cluster_state:ok"), "node {i}: {info}");
        assert!(info.contains("cluster_known_nodes:6"), "node {i}: {info}");
    }
    assert_eq!(cluster.seed_arg(), cluster.seeds().join(","));
    assert_eq!(cluster.owner_of_slot(0).await.unwrap(), 0);
    assert_eq!(cluster.owner_of_slot(5461).await.unwrap(), 1);
    assert_eq!(cluster.owner_of_slot(16383).await.unwrap(), 2);
    cluster.wait_until_ok(Duration::ZERO).await.unwrap();
    // A key's owner takes it; another primary redirects.
    let key = "room:{lobby}:stream";
    let owner = cluster.owner_of_slot(key_slot(key)).await.unwrap();
    assert_eq!(
        cluster.command(owner, &["SET", key, "v"]).await.unwrap(),
        ok()
    );
    let other = (owner + 1) % 3;
    let moved = cluster.command(other, &["GET", key]).await.unwrap();
    let expected = format!("MOVED {} {}", key_slot(key), cluster.node(owner).addr());
    assert_eq!(moved, RespValue::Error(expected));
}

#[tokio::test]
async fn key_slot_agrees_with_cluster_keyslot() {
    // One cluster-enabled node answers CLUSTER KEYSLOT without any slots.
    let node = RedisServer::start_with(RedisOptions {
        args: [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ]
        .map(str::to_owned)
        .to_vec(),
        cluster_bus: true,
    })
    .await
    .unwrap();
    // Shaped like the bridge's keys, which the tidy rule lets only
    // chat-bridge spell; the slot depends on the `{room}` tag alone.
    let keys = [
        "room:{lobby}:stream",
        "room:{lobby}:presence",
        "room:{caf%C3%A9}:stream",
        "lobby",
        "",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "{user1000}.following",
        "123456789",
        "gateways",
        "\u{e9}t\u{e9}",
    ];
    for key in keys {
        let reply = node.command(&["CLUSTER", "KEYSLOT", key]).await.unwrap();
        assert_eq!(
            reply,
            RespValue::Integer(i64::from(key_slot(key))),
            "key {key:?}"
        );
    }
}

#[tokio::test]
async fn migrate_slot_moves_the_slot_with_its_keys() {
    let cluster = start().await;
    let key = "room:{lobby}:stream";
    let slot = key_slot(key);
    let from = cluster.owner_of_slot(slot).await.unwrap();
    let to = (from + 1) % 3;
    assert_eq!(
        cluster.command(from, &["SET", key, "v"]).await.unwrap(),
        ok()
    );
    // More keys than one MIGRATE batch moves.
    let mut mset = vec!["MSET".to_owned()];
    for n in 0..250 {
        mset.extend([format!("room:{{lobby}}:k{n}"), n.to_string()]);
    }
    let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(cluster.command(from, &mset).await.unwrap(), ok());

    let started = Instant::now();
    cluster.migrate_slot(slot, to).await.unwrap();
    let moved = started.elapsed();
    cluster.wait_until_ok(WAIT).await.unwrap();
    eprintln!(
        "slot {slot} (251 keys) migrated in {moved:?}, all nodes agree after {:?}",
        started.elapsed()
    );

    assert_eq!(cluster.owner_of_slot(slot).await.unwrap(), to);
    assert_eq!(cluster.command(to, &["GET", key]).await.unwrap(), bulk("v"));
    assert_eq!(
        cluster
            .command(to, &["GET", "room:{lobby}:k249"])
            .await
            .unwrap(),
        bulk("249")
    );
    let count = cluster
        .command(to, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
        .await
        .unwrap();
    assert_eq!(count, RespValue::Integer(251));
    let expected = format!("MOVED {slot} {}", cluster.node(to).addr());
    assert_eq!(
        cluster.command(from, &["GET", key]).await.unwrap(),
        RespValue::Error(expected)
    );
    // The slot's neighbours stayed where they were.
    let neighbour = if slot == 0 { 1 } else { slot - 1 };
    assert_eq!(cluster.owner_of_slot(neighbour).await.unwrap(), from);
    // Moving it to where it is already is nothing to do.
    cluster.migrate_slot(slot, to).await.unwrap();
}

#[tokio::test]
async fn a_killed_primary_is_replaced_by_its_replica() {
    let mut cluster = start().await;
    let key = "room:{lobby}:stream";
    let primary = cluster.owner_of_slot(key_slot(key)).await.unwrap();
    let replica = cluster.replica_of(primary).await.unwrap().unwrap();
    assert_eq!(
        cluster.command(primary, &["SET", key, "v"]).await.unwrap(),
        ok()
    );
    // The write reached the replica before the crash.
    let acks = cluster
        .command(primary, &["WAIT", "1", "5000"])
        .await
        .unwrap();
    assert_eq!(acks, RespValue::Integer(1));

    cluster.kill(primary).await.unwrap();
    let killed = Instant::now();
    cluster.wait_until_ok(WAIT).await.unwrap();
    eprintln!(
        "primary {primary} killed: replica {replica} serves its slots after {:?} (node timeout {:?})",
        killed.elapsed(),
        cluster.node_timeout()
    );
    assert!(cluster.primaries().await.unwrap().contains(&replica));
    assert_eq!(cluster.owner_of_slot(key_slot(key)).await.unwrap(), replica);
    assert_eq!(
        cluster.command(replica, &["GET", key]).await.unwrap(),
        bulk("v")
    );

    // Restarted, the old primary rejoins as the new primary's replica.
    cluster.restart(primary).await.unwrap();
    let restarted = Instant::now();
    try_eventually(WAIT, || async {
        cluster
            .primary_of(primary)
            .await
            .map(|p| p == Some(replica))
            .unwrap_or(false)
    })
    .await
    .unwrap();
    cluster
        .wait(WAIT, "the replicas to sync", || cluster.replicas_up())
        .await
        .unwrap();
    cluster.wait_until_ok(WAIT).await.unwrap();
    eprintln!(
        "node {primary} restarted: replica of {replica} again after {:?}",
        restarted.elapsed()
    );
    assert_eq!(cluster.replica_of(replica).await.unwrap(), Some(primary));
    let readonly = cluster.command(primary, &["GET", key]).await.unwrap();
    let expected = format!("MOVED {} {}", key_slot(key), cluster.node(replica).addr());
    assert_eq!(readonly, RespValue::Error(expected));
}
