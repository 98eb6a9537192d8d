//! The protocol suite against the embedded (memory) backend.

mod protocol_suite;

protocol_suite::instantiate!(chat_test_support::BackendKind::Memory);
