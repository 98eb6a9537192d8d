//! The tidy test's rules, as rust-analyzer's `tidy.rs` does it: the
//! invariants that ARCHITECTURE.md states are checked from `cargo metadata`
//! and the sources, with the other tests (`tests/tidy.rs` runs them on this
//! repository). Each rule is a function from what it reads to a list of
//! [`Violation`]s, and has a unit test that breaks it once.
//!
//! The rules:
//! - `deps.rs`: only `chat-bridge` depends on fred and names Redis keys;
//!   `chat-proto` has no tokio in its dependency closure; `chat-lb` depends on
//!   no chat crate (but the generic `chat-net`).
//! - `modules.rs`: no import cycles between sibling modules.
//! - `docs.rs`: every Rust file starts with a `//!` comment; every path
//!   ARCHITECTURE.md names exists; no `innerHTML` (or another HTML sink) in
//!   `web/src`.
//! - `size.rs`: no file over 600 lines and no function over 100 lines outside
//!   tests, but for `allow.rs`'s list, which may only shrink.

mod allow;
pub mod deps;
pub mod docs;
pub mod lexer;
pub mod modules;
pub mod repo;
pub mod size;

use std::fmt;
use std::path::Path;

/// One broken rule, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule's short name (`module-cycle`, `file-size`, …).
    pub rule: &'static str,
    /// What is wrong, and where.
    pub message: String,
}

impl Violation {
    /// A violation of `rule`.
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

/// Runs every rule on the repository at `root`.
pub fn check_repository(root: &Path) -> Result<Vec<Violation>, String> {
    let repo = repo::Repo::load(root)?;
    let graph = deps::Graph::load(root)?;
    let mut violations = deps::check(&graph);
    violations.extend(deps::check_redis_keys(&repo.rust_strings()));
    for krate in repo.crate_modules() {
        violations.extend(modules::check(&krate));
    }
    violations.extend(docs::check_headers(&repo.rust_sources()));
    violations.extend(docs::check_web_sinks(&repo.web_sources()));
    violations.extend(docs::check_architecture(&repo.architecture, &repo.tree));
    violations.extend(size::check(&repo.sized_files(), allow::ALLOWED));
    Ok(violations)
}
