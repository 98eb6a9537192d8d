//! No module import cycles: within each crate, sibling modules (children of
//! the same parent, the crate's top-level modules included) must not import
//! each other in a circle. A module may use its parent and its children
//! freely (a parent is its children's façade); between siblings the
//! dependencies form a layering that can be read in one direction.
//!
//! References are read from the source: `crate::a::b`, `super::x` and
//! `self::y` paths, in `use` trees (`crate::{a, b::{c, d}}`) and in code.

use std::collections::{BTreeMap, BTreeSet};

use crate::Violation;

/// A module path inside one crate (`["redis", "presence"]`; empty = the crate root).
pub type ModPath = Vec<String>;

/// One crate's module files: each module's path and its code (comments and
/// literals blanked, test items included or not as the caller chooses).
#[derive(Debug, Default, Clone)]
pub struct CrateModules {
    /// The crate's name, for messages.
    pub name: String,
    /// Module path → code of its file.
    pub modules: BTreeMap<ModPath, String>,
}

/// The module path of a file under `src/`, given as its path relative to
/// `src/` (`lib.rs`, `redis/mod.rs`, `redis/presence.rs`).
pub fn module_path(relative: &str) -> ModPath {
    let trimmed = relative.trim_end_matches(".rs");
    let mut parts: Vec<String> = trimmed.split('/').map(str::to_owned).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Checks one crate for cycles between sibling modules.
pub fn check(krate: &CrateModules) -> Vec<Violation> {
    // parent → (child → children it depends on)
    let mut levels: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, code) in &krate.modules {
        for reference in references(from, code) {
            let Some(target) = longest_module(&krate.modules, &reference) else {
                continue;
            };
            let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == target.len() {
                continue; // ancestor or descendant: allowed
            }
            levels
                .entry(from[..common].to_vec())
                .or_default()
                .entry(from[common].clone())
                .or_default()
                .insert(target[common].clone());
        }
    }
    let mut violations = Vec::new();
    for (parent, graph) in &levels {
        if let Some(cycle) = find_cycle(graph) {
            let prefix = if parent.is_empty() {
                String::new()
            } else {
                format!("{}::", parent.join("::"))
            };
            let shown: Vec<String> = cycle.iter().map(|m| format!("{prefix}{m}")).collect();
            violations.push(Violation::new(
                "module-cycle",
                format!(
                    "{}: modules import each other in a circle: {}",
                    krate.name,
                    shown.join(" -> ")
                ),
            ));
        }
    }
    violations
}

/// The longest prefix of `path` that is a module of the crate.
fn longest_module(modules: &BTreeMap<ModPath, String>, path: &[String]) -> Option<ModPath> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|candidate| modules.contains_key(candidate))
}

/// One cycle in `graph`, as a path that returns to its start.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

/// Every absolute module-relative path that `code` (the file of module
/// `from`) refers to through `crate::`, `super::` or `self::`.
pub fn references(from: &[String], code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let word_start = i == 0
            || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if word_start {
            if let Some((base, after)) = path_root(&chars, i, from) {
                let mut parser = TreeParser {
                    chars: &chars,
                    i: after,
                };
                parser.tree(base, &mut found);
                i = parser.i.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    found
}

/// If a path rooted at `crate`, `self` or `super` (repeated) starts at `i`,
/// the module it starts from and the index after its last `::`.
fn path_root(chars: &[char], i: usize, from: &[String]) -> Option<(Vec<String>, usize)> {
    let word = |at: usize, w: &str| {
        let n = w.chars().count();
        chars
            .get(at..at + n)
            .is_some_and(|s| s.iter().copied().eq(w.chars()))
            && chars.get(at + n..at + n + 2) == Some(&[':', ':'])
    };
    if word(i, "crate") {
        return Some((Vec::new(), i + "crate::".len()));
    }
    let mut at = i;
    let mut base = from.to_vec();
    let mut any = false;
    loop {
        if word(at, "super") {
            base.pop()?;
            at += "super::".len();
            any = true;
        } else if word(at, "self") && !any {
            at += "self::".len();
            any = true;
        } else {
            break;
        }
    }
    any.then_some((base, at))
}

/// Reads a path or a `use` tree (`a::b`, `{a, b::{c, d}}`, `*`).
struct TreeParser<'a> {
    chars: &'a [char],
    i: usize,
}

impl TreeParser<'_> {
    fn skip_space(&mut self) {
        while self.chars.get(self.i).is_some_and(|c| c.is_whitespace()) {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_space();
        let start = self.i;
        while self
            .chars
            .get(self.i)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        {
            self.i += 1;
        }
        (self.i > start).then(|| self.chars[start..self.i].iter().collect())
    }

    fn tree(&mut self, mut base: Vec<String>, found: &mut Vec<Vec<String>>) {
        self.skip_space();
        if self.chars.get(self.i) == Some(&'{') {
            self.i += 1;
            loop {
                self.skip_space();
                match self.chars.get(self.i) {
                    Some('}') => {
                        self.i += 1;
                        return;
                    }
                    Some(',') => self.i += 1,
                    None => return,
                    _ => {
                        let before = self.i;
                        self.tree(base.clone(), found);
                        if self.i == before {
                            self.i += 1;
                        }
                    }
                }
            }
        }
        while let Some(ident) = self.ident() {
            if ident != "self" {
                base.push(ident);
            }
            self.skip_space();
            if self.chars.get(self.i..self.i + 2) == Some(&[':', ':']) {
                self.i += 2;
                self.skip_space();
                if self.chars.get(self.i) == Some(&'{') {
                    self.tree(base, found);
                    return;
                }
            } else {
                break;
            }
        }
        if self.chars.get(self.i) == Some(&'*') {
            self.i += 1;
        }
        found.push(base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Vec<String> {
        s.split("::")
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn module_paths_come_from_file_paths() {
        assert_eq!(module_path("lib.rs"), path(""));
        assert_eq!(module_path("redis/mod.rs"), path("redis"));
        assert_eq!(module_path("redis/presence.rs"), path("redis::presence"));
    }

    #[test]
    fn references_are_read_from_use_trees_and_code() {
        let code = "use crate::{hub::Hub, state::{Shared, X}};\nuse super::super::top;\nuse self::child::*;\nlet a = crate::wire::encode(super::sibling::f());";
        let found = references(&path("a::b"), code);
        let shown: Vec<String> = found.iter().map(|p| p.join("::")).collect();
        assert_eq!(
            shown,
            [
                "hub::Hub",
                "state::Shared",
                "state::X",
                "top",
                "a::b::child",
                "wire::encode",
                "a::sibling::f"
            ]
        );
    }

    fn krate(files: &[(&str, &str)]) -> CrateModules {
        CrateModules {
            name: "x".to_owned(),
            modules: files
                .iter()
                .map(|(file, code)| (module_path(file), (*code).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_cycle_between_siblings_is_a_violation() {
        let cyclic = krate(&[
            ("lib.rs", "mod listener; mod connection;"),
            ("listener.rs", "use crate::connection::Slot;"),
            ("connection.rs", "use crate::listener::accept;"),
        ]);
        let violations = check(&cyclic);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].rule, "module-cycle");
        assert!(violations[0]
            .message
            .contains("connection -> listener -> connection"));
    }

    #[test]
    fn a_cycle_through_nested_modules_counts_at_their_siblings_level() {
        let cyclic = krate(&[
            ("lib.rs", ""),
            ("redis/mod.rs", "use crate::hub::Hub;"),
            ("hub/mod.rs", ""),
            ("hub/room.rs", "use crate::redis::keys::Keys;"),
            ("redis/keys.rs", ""),
        ]);
        assert_eq!(check(&cyclic).len(), 1);
    }

    #[test]
    fn parents_and_children_and_layers_are_allowed() {
        let fine = krate(&[
            ("lib.rs", "use crate::session::run;"),
            (
                "session/mod.rs",
                "use self::transport::pump; use crate::state::Shared;",
            ),
            (
                "session/transport.rs",
                "use super::Session; use super::rules::decide;",
            ),
            ("session/rules.rs", ""),
            ("state.rs", "use crate::wire::Frame;"),
            ("wire.rs", ""),
        ]);
        assert!(check(&fine).is_empty(), "{:?}", check(&fine));
    }
}
