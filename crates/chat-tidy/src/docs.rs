//! Rules on what the repository says about itself: every Rust source file
//! starts with a `//!` comment saying what it is; every path that
//! ARCHITECTURE.md names exists; and the web client never hands a string to
//! an HTML parser (`innerHTML` and its siblings), so message text can only
//! ever be text.

use crate::Violation;

/// Checks that each file (path, source) starts with a `//!` comment.
pub fn check_headers(files: &[(String, String)]) -> Vec<Violation> {
    files
        .iter()
        .filter(|(_, source)| !source.trim_start().starts_with("//!"))
        .map(|(path, _)| {
            Violation::new(
                "file-header",
                format!("{path}: does not start with a `//!` comment saying what it is"),
            )
        })
        .collect()
}

/// The DOM sinks that parse a string as HTML.
pub const HTML_SINKS: &[&str] = &[
    "innerHTML",
    "outerHTML",
    "insertAdjacentHTML",
    "document.write",
];

/// Checks web sources (path, source) for HTML sinks.
pub fn check_web_sinks(files: &[(String, String)]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (path, source) in files {
        for (n, line) in source.lines().enumerate() {
            for sink in HTML_SINKS.iter().filter(|sink| line.contains(*sink)) {
                violations.push(Violation::new(
                    "web-text-only",
                    format!(
                        "{path}:{}: uses {sink}: set text with textContent and build elements with createElement",
                        n + 1
                    ),
                ));
            }
        }
    }
    violations
}

/// The paths named in `architecture` (ARCHITECTURE.md's text): backticked
/// words that look like a file or directory, each with the directory the
/// section it appears in is about (`### \`crates/chat-lb\`` → `crates/chat-lb`).
pub fn named_paths(architecture: &str) -> Vec<(usize, String, String)> {
    let mut base = String::new();
    let mut found = Vec::new();
    for (n, line) in architecture.lines().enumerate() {
        if let Some(heading) = line
            .strip_prefix("### ")
            .or_else(|| line.strip_prefix("## "))
        {
            base = heading
                .trim()
                .strip_prefix('`')
                .and_then(|h| h.strip_suffix('`'))
                .map(|h| h.trim_end_matches('/').to_owned())
                .unwrap_or_default();
        }
        for (k, word) in line.split('`').enumerate() {
            if k % 2 == 1 && looks_like_path(word) {
                found.push((n + 1, base.clone(), word.to_owned()));
            }
        }
    }
    found
}

const EXTENSIONS: &[&str] = &[
    ".rs", ".ts", ".toml", ".md", ".sh", ".proto", ".lua", ".yml", ".yaml", ".json", ".html",
    ".css", ".service",
];

fn looks_like_path(word: &str) -> bool {
    let plain = !word.is_empty()
        && !word.starts_with('/')
        && !word.starts_with('@')
        && !word.contains(' ')
        && !word.contains("::");
    plain
        && (word.ends_with('/')
            || word.contains('/')
            || EXTENSIONS.iter().any(|e| word.ends_with(e)))
}

/// Checks that every path ARCHITECTURE.md names exists: as given from the
/// root, or as the end of some path under its section's directory (or
/// anywhere, outside a crate's section). `files` lists every file and
/// directory of the repository, relative to the root, directories with a
/// trailing `/`. A `*` in the last component matches any run of characters.
pub fn check_architecture(architecture: &str, files: &[String]) -> Vec<Violation> {
    named_paths(architecture)
        .into_iter()
        .filter(|(_, base, word)| !exists(files, base, word))
        .map(|(line, _, word)| {
            Violation::new(
                "architecture-paths",
                format!("ARCHITECTURE.md:{line}: names `{word}`, which does not exist"),
            )
        })
        .collect()
}

fn exists(files: &[String], base: &str, word: &str) -> bool {
    let dir = word.ends_with('/');
    let word = word.trim_end_matches('/');
    let under = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    files.iter().any(|file| {
        if dir && !file.ends_with('/') {
            return false;
        }
        let file = file.trim_end_matches('/');
        if file == word {
            return true;
        }
        let Some(rest) = file.strip_prefix(&under) else {
            return false;
        };
        rest == word || rest.ends_with(&format!("/{word}")) || glob_tail(rest, word)
    })
}

/// `word` with one `*` (any run of characters but `/`), matched against
/// `path` or any of its tails that starts a component.
fn glob_tail(path: &str, word: &str) -> bool {
    let Some((before, after)) = word.split_once('*') else {
        return false;
    };
    let tails = std::iter::once(path).chain(path.match_indices('/').map(|(k, _)| &path[k + 1..]));
    let matches = |tail: &str| {
        tail.len() > before.len() + after.len()
            && tail.starts_with(before)
            && tail.ends_with(after)
            && !tail[before.len()..tail.len() - after.len()].contains('/')
    };
    tails.into_iter().any(matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
            .collect()
    }

    #[test]
    fn a_file_without_a_header_is_a_violation() {
        let list = files(&[
            ("a.rs", "//! What a is.\nfn a() {}\n"),
            ("b.rs", "// not a module doc\nfn b() {}\n"),
        ]);
        let violations = check_headers(&list);
        assert_eq!(violations.len(), 1);
        assert!(violations[0].message.starts_with("b.rs"));
    }

    #[test]
    fn an_html_sink_in_the_web_client_is_a_violation() {
        let list = files(&[
            ("web/src/ok.ts", "el.textContent = text;\n"),
            ("web/src/bad.ts", "const a = 1;\nel.innerHTML = text;\n"),
        ]);
        let violations = check_web_sinks(&list);
        assert_eq!(violations.len(), 1);
        assert!(violations[0].message.contains("bad.ts:2"));
    }

    #[test]
    fn paths_in_architecture_must_exist() {
        let tree: Vec<String> = [
            "crates/",
            "crates/chat-lb/",
            "crates/chat-lb/src/",
            "crates/chat-lb/src/slot.rs",
            "crates/chat-gateway/src/hub.rs",
            "web/",
            "web/src/",
            "web/src/lang-en.ts",
            "proto/",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let good = "## Code map\n### `crates/chat-lb`\nSee `slot.rs`, `GET /healthz`, `/metrics`.\n### `web/`\n`src/lang-*.ts`\n### Other\n`proto/` and `crates/chat-gateway/src/hub.rs`, `@bufbuild/protobuf`.\n";
        assert!(
            check_architecture(good, &tree).is_empty(),
            "{:?}",
            check_architecture(good, &tree)
        );

        let bad = "### `crates/chat-lb`\n`hub.rs` is not here, nor `gone.rs`.\n";
        let violations = check_architecture(bad, &tree);
        let shown: Vec<_> = violations.iter().map(|v| v.message.as_str()).collect();
        assert_eq!(
            shown,
            [
                "ARCHITECTURE.md:2: names `hub.rs`, which does not exist",
                "ARCHITECTURE.md:2: names `gone.rs`, which does not exist"
            ]
        );
    }
}
