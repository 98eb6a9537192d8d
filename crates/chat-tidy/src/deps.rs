//! Dependency rules, read from `cargo metadata`: only `chat-bridge` depends on
//! fred; `chat-proto` has no tokio anywhere in its dependency closure (all
//! features on); `chat-lb` depends on no chat crate but the generic
//! `chat-net`. And, from the sources: only `chat-bridge` names Redis keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::Violation;

/// The crate that alone knows Redis.
pub const REDIS_CRATE: &str = "chat-bridge";
/// The chat crates that `chat-lb` may depend on (they know nothing of chat).
pub const LB_MAY_USE: &[&str] = &["chat-net"];

/// This crate, whose tests spell keys to show the rule failing.
const SELF: &str = "crates/chat-tidy/";

/// What the rules need from `cargo metadata`.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    /// The workspace's package names.
    pub members: BTreeSet<String>,
    /// Package → its declared dependencies, as (name, kind: "normal", "dev" or "build").
    pub declared: BTreeMap<String, Vec<(String, String)>>,
    /// Package → the packages it resolves to as normal (non-dev, non-build) dependencies.
    pub normal: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
    resolve: Resolve,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    dependencies: Vec<Dependency>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    id: String,
    deps: Vec<NodeDep>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    kind: Option<String>,
}

impl Graph {
    /// Runs `cargo metadata` (all features) in `root` and reads the graph.
    pub fn load(root: &Path) -> Result<Self, String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .current_dir(root)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--all-features",
                "--locked",
            ])
            .output()
            .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let metadata: Metadata = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("cannot read cargo metadata: {e}"))?;
        Ok(Self::from_metadata(metadata))
    }

    fn from_metadata(metadata: Metadata) -> Self {
        let names: BTreeMap<&str, &str> = metadata
            .packages
            .iter()
            .map(|p| (p.id.as_str(), p.name.as_str()))
            .collect();
        let mut graph = Self::default();
        for id in &metadata.workspace_members {
            graph.members.insert(names[id.as_str()].to_owned());
        }
        for package in &metadata.packages {
            let declared = package
                .dependencies
                .iter()
                .map(|d| {
                    (
                        d.name.clone(),
                        d.kind.clone().unwrap_or_else(|| "normal".to_owned()),
                    )
                })
                .collect();
            graph.declared.insert(package.name.clone(), declared);
        }
        for node in &metadata.resolve.nodes {
            let normal = node
                .deps
                .iter()
                .filter(|d| d.dep_kinds.iter().any(|k| k.kind.is_none()))
                .map(|d| names[d.pkg.as_str()].to_owned());
            graph
                .normal
                .entry(names[node.id.as_str()].to_owned())
                .or_default()
                .extend(normal);
        }
        graph
    }

    /// Every package reachable from `from` through normal dependencies.
    pub fn closure(&self, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(next) = todo.pop() {
            for dep in self.normal.get(&next).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen
    }
}

/// Checks the dependency rules on `graph`.
pub fn check(graph: &Graph) -> Vec<Violation> {
    let mut violations = Vec::new();
    for member in &graph.members {
        let declared = graph.declared.get(member).into_iter().flatten();
        for (dep, kind) in declared {
            if dep == "fred" && member != REDIS_CRATE {
                violations.push(Violation::new(
                    "redis-only-in-bridge",
                    format!("{member} depends on fred ({kind}): only {REDIS_CRATE} knows Redis"),
                ));
            }
            let lb_forbidden = member == "chat-lb"
                && kind == "normal"
                && graph.members.contains(dep)
                && !LB_MAY_USE.contains(&dep.as_str());
            if lb_forbidden {
                violations.push(Violation::new(
                    "lb-knows-no-chat",
                    format!("chat-lb depends on {dep}: it must know nothing of chat"),
                ));
            }
        }
    }
    if graph.closure("chat-proto").contains("tokio") {
        violations.push(Violation::new(
            "proto-has-no-runtime",
            "tokio is in chat-proto's dependency closure (all features on): it must have no runtime",
        ));
    }
    violations
}

/// Checks that no Rust file outside `chat-bridge` names a Redis key: a
/// string literal that starts with the default key prefix `chat:`.
pub fn check_redis_keys(files: &[(String, Vec<(usize, String)>)]) -> Vec<Violation> {
    let bridge = format!("crates/{REDIS_CRATE}/");
    files
        .iter()
        .filter(|(path, _)| !path.starts_with(&bridge) && !path.starts_with(SELF))
        .flat_map(|(path, strings)| {
            strings
                .iter()
                .filter(|(_, s)| names_a_key(s))
                .map(move |(line, s)| {
                    Violation::new(
                        "redis-only-in-bridge",
                        format!("{path}:{line}: \"{s}\" names a Redis key: build it with chat_bridge::RedisKeys"),
                    )
                })
        })
        .collect()
}

/// `chat:` followed by a key name (not prose such as "chat: hello").
fn names_a_key(literal: &str) -> bool {
    literal
        .strip_prefix("chat:")
        .is_some_and(|rest| rest.starts_with(|c: char| !c.is_whitespace()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str, &str)]) -> Graph {
        let mut graph = Graph::default();
        for name in [
            "chat-proto",
            "chat-bridge",
            "chat-lb",
            "chat-net",
            "chat-gateway",
        ] {
            graph.members.insert(name.to_owned());
        }
        for (from, to, kind) in edges {
            graph
                .declared
                .entry((*from).to_owned())
                .or_default()
                .push(((*to).to_owned(), (*kind).to_owned()));
            if *kind == "normal" {
                graph
                    .normal
                    .entry((*from).to_owned())
                    .or_default()
                    .insert((*to).to_owned());
            }
        }
        graph
    }

    const GOOD: &[(&str, &str, &str)] = &[
        ("chat-bridge", "fred", "normal"),
        ("chat-gateway", "chat-bridge", "normal"),
        ("chat-gateway", "tokio", "normal"),
        ("chat-lb", "chat-net", "normal"),
        ("chat-lb", "chat-gateway", "dev"),
        ("chat-proto", "prost", "normal"),
        ("prost", "bytes", "normal"),
    ];

    #[test]
    fn the_rules_hold_on_a_good_graph() {
        assert!(check(&graph(GOOD)).is_empty());
    }

    fn broken(extra: (&'static str, &'static str, &'static str)) -> Vec<&'static str> {
        let mut edges = GOOD.to_vec();
        edges.push(extra);
        check(&graph(&edges)).iter().map(|v| v.rule).collect()
    }

    #[test]
    fn fred_outside_the_bridge_is_a_violation() {
        assert_eq!(
            broken(("chat-gateway", "fred", "dev")),
            ["redis-only-in-bridge"]
        );
    }

    #[test]
    fn a_chat_crate_under_chat_lb_is_a_violation() {
        assert_eq!(
            broken(("chat-lb", "chat-proto", "normal")),
            ["lb-knows-no-chat"]
        );
    }

    #[test]
    fn tokio_anywhere_under_chat_proto_is_a_violation() {
        assert_eq!(
            broken(("bytes", "tokio", "normal")),
            ["proto-has-no-runtime"]
        );
    }

    #[test]
    fn a_redis_key_outside_the_bridge_is_a_violation() {
        let files = vec![
            (
                "crates/chat-bridge/src/redis/keys.rs".to_owned(),
                vec![(3, "chat:gateways".to_owned())],
            ),
            (
                "crates/chat-gateway/tests/cluster.rs".to_owned(),
                vec![(9, "chat:{r}:members".to_owned())],
            ),
            (
                "crates/chat-gateway/src/a.rs".to_owned(),
                vec![(1, "chat: hello".to_owned())],
            ),
        ];
        let violations = check_redis_keys(&files);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].message.contains("cluster.rs:9"));
    }
}
