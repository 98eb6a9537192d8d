//! The protocol suite against a real redis-server (one per case): every rule
//! of the contract must hold on the Redis bridge exactly as on the embedded one.

mod protocol_suite;

protocol_suite::instantiate!(chat_test_support::BackendKind::Redis);
