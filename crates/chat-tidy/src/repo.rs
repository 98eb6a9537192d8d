//! The repository as the rules read it: its file tree, its Rust sources
//! (lexed, with test-only code told apart), its web sources and
//! ARCHITECTURE.md.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::lexer::{test_module_files, Lexed};
use crate::modules::{module_path, CrateModules, ModPath};

/// Directories never read: build output, dependencies, git's own.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", ".git", "dist"];

/// One Rust source file.
#[derive(Debug, Clone)]
pub struct RustFile {
    /// Path relative to the repository root.
    pub path: String,
    /// Its text.
    pub source: String,
    /// Its lexed form.
    pub lexed: Lexed,
}

/// What the rules read from the repository.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Every file and directory (directories end with `/`), relative to the root.
    pub tree: Vec<String>,
    /// Every Rust file under `crates/` and `fuzz/`.
    pub rust: Vec<RustFile>,
    /// Every TypeScript file under `web/src/`, with its text.
    pub web: Vec<(String, String)>,
    /// ARCHITECTURE.md's text.
    pub architecture: String,
}

impl Repo {
    /// Reads the repository at `root`.
    pub fn load(root: &Path) -> Result<Self, String> {
        let mut tree = Vec::new();
        walk(root, "", &mut tree).map_err(|e| format!("cannot read {}: {e}", root.display()))?;
        tree.sort();
        let read = |path: &str| {
            fs::read_to_string(root.join(path)).map_err(|e| format!("cannot read {path}: {e}"))
        };
        let mut rust = Vec::new();
        let mut web = Vec::new();
        for path in &tree {
            let in_rust_tree = path.starts_with("crates/") || path.starts_with("fuzz/");
            if in_rust_tree && path.ends_with(".rs") {
                let source = read(path)?;
                let lexed = Lexed::new(&source);
                rust.push(RustFile {
                    path: path.clone(),
                    source,
                    lexed,
                });
            } else if path.starts_with("web/src/") && path.ends_with(".ts") {
                web.push((path.clone(), read(path)?));
            }
        }
        Ok(Self {
            tree,
            rust,
            web,
            architecture: read("ARCHITECTURE.md")?,
        })
    }

    /// (path, string literals) of every Rust file.
    pub fn rust_strings(&self) -> Vec<(String, Vec<(usize, String)>)> {
        self.rust
            .iter()
            .map(|f| (f.path.clone(), f.lexed.strings.clone()))
            .collect()
    }

    /// (path, text) of every Rust file.
    pub fn rust_sources(&self) -> Vec<(String, String)> {
        self.rust
            .iter()
            .map(|f| (f.path.clone(), f.source.clone()))
            .collect()
    }

    /// (path, text) of every web source file.
    pub fn web_sources(&self) -> Vec<(String, String)> {
        self.web.clone()
    }

    /// The library (or, without one, binary) module tree of each crate under
    /// `crates/`, test-only code left out.
    pub fn crate_modules(&self) -> Vec<CrateModules> {
        let mut crates = Vec::new();
        for dir in self.tree.iter().filter(|p| is_crate_dir(p)) {
            let src = format!("{dir}src/");
            let has_lib = self.tree.contains(&format!("{src}lib.rs"));
            let files: Vec<(&RustFile, &str)> = self
                .rust
                .iter()
                .filter_map(|f| Some((f, f.path.strip_prefix(&src)?)))
                .filter(|(_, rel)| !rel.starts_with("bin/"))
                .filter(|(_, rel)| !(has_lib && *rel == "main.rs"))
                .collect();
            let tests = test_modules(files.iter().map(|(f, rel)| (*f, *rel)));
            let mut krate = CrateModules {
                name: dir
                    .trim_start_matches("crates/")
                    .trim_end_matches('/')
                    .to_owned(),
                ..CrateModules::default()
            };
            for (file, rel) in files {
                let path = module_path(rel);
                if !is_test_module(&tests, &path) {
                    krate.modules.insert(path, without_tests(&file.lexed));
                }
            }
            crates.push(krate);
        }
        crates
    }

    /// The files the size rules apply to: sources under `crates/*/src/` and
    /// `fuzz/src/`, and build scripts, without test-only modules.
    pub fn sized_files(&self) -> Vec<(String, Lexed)> {
        let tests: BTreeSet<String> = self.crate_modules_test_files().into_iter().collect();
        self.rust
            .iter()
            .filter(|f| {
                let p = f.path.as_str();
                let in_src =
                    p.contains("/src/") && (p.starts_with("crates/") || p.starts_with("fuzz/"));
                (in_src || p.ends_with("/build.rs")) && !tests.contains(p)
            })
            .map(|f| (f.path.clone(), f.lexed.clone()))
            .collect()
    }

    /// Paths of Rust files that are test-only modules.
    fn crate_modules_test_files(&self) -> Vec<String> {
        let mut found = Vec::new();
        let roots = self
            .tree
            .iter()
            .filter(|p| is_crate_dir(p) || *p == "fuzz/")
            .map(|dir| format!("{dir}src/"));
        for src in roots {
            let files = self
                .rust
                .iter()
                .filter_map(|f| Some((f, f.path.strip_prefix(&src)?)));
            let tests = test_modules(files.clone());
            found.extend(
                files
                    .filter(|(_, rel)| is_test_module(&tests, &module_path(rel)))
                    .map(|(f, _)| f.path.clone()),
            );
        }
        found
    }
}

fn is_crate_dir(path: &str) -> bool {
    path.starts_with("crates/") && path.ends_with('/') && path.matches('/').count() == 2
}

/// The module paths declared `#[cfg(test)] mod x;`, plus every module named `tests`.
fn test_modules<'a>(files: impl Iterator<Item = (&'a RustFile, &'a str)>) -> BTreeSet<ModPath> {
    let mut tests = BTreeSet::new();
    for (file, rel) in files {
        let path = module_path(rel);
        if path.last().is_some_and(|name| name == "tests") {
            tests.insert(path.clone());
        }
        for child in test_module_files(&file.lexed.code) {
            let mut child_path = path.clone();
            child_path.push(child);
            tests.insert(child_path);
        }
    }
    tests
}

fn is_test_module(tests: &BTreeSet<ModPath>, path: &ModPath) -> bool {
    (1..=path.len()).any(|n| tests.contains(&path[..n].to_vec()))
}

/// The lexed code with the lines of `#[cfg(test)]` items blanked.
fn without_tests(lexed: &Lexed) -> String {
    lexed
        .code
        .lines()
        .enumerate()
        .map(|(n, line)| if lexed.is_test_line(n + 1) { "" } else { line })
        .collect::<Vec<_>>()
        .join("\n")
}

fn walk(root: &Path, relative: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{relative}{name}");
        if entry.file_type()?.is_dir() {
            if SKIPPED_DIRS.contains(&name.as_str()) {
                continue;
            }
            out.push(format!("{path}/"));
            walk(root, &format!("{path}/"), out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
