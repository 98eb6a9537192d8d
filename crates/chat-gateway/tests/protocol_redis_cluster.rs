//! The protocol suite against a real local Redis Cluster (3 primaries, 3
//! replicas, one per case): every rule of the contract must hold on the
//! Redis bridge in cluster mode (sharded pub/sub, keys spread over shards)
//! exactly as on one Redis and on the embedded bridge.

mod protocol_suite;

protocol_suite::instantiate!(chat_test_support::BackendKind::RedisCluster);
