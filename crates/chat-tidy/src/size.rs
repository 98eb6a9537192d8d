//! Size rules: no source file over [`MAX_FILE_LINES`] lines and no function
//! over [`MAX_FN_LINES`] lines outside tests, except what the allow-list in
//! `allow.rs` names; an entry that no longer needs its exemption is itself a
//! violation, so the list can only shrink.

use crate::lexer::{line_of, Lexed};
use crate::Violation;

/// Longest source file, in lines outside `#[cfg(test)]` items.
pub const MAX_FILE_LINES: usize = 600;
/// Longest function, from its `fn` line to its closing brace.
pub const MAX_FN_LINES: usize = 100;

/// A function found in a file: its name, first line and length in lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Its name.
    pub name: String,
    /// The 1-based line of its `fn` keyword.
    pub line: usize,
    /// Lines from the `fn` keyword to the closing brace.
    pub lines: usize,
}

/// The functions with a body in `lexed`, outside `#[cfg(test)]` items.
pub fn functions(lexed: &Lexed) -> Vec<Function> {
    let code = &lexed.code;
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = find_keyword(code, "fn", from) {
        from = at + 2;
        let name: String = code[at + 2..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue; // a `fn(…)` pointer type
        }
        let line = line_of(code, at);
        if lexed.is_test_line(line) {
            continue;
        }
        let Some(open) = body_start(bytes, at) else {
            continue; // a declaration without a body
        };
        let Some(close) = matching_brace(bytes, open) else {
            continue;
        };
        found.push(Function {
            name,
            line,
            lines: line_of(code, close) - line + 1,
        });
    }
    found
}

/// The next `keyword` at or after `from` that stands alone as a word.
fn find_keyword(code: &str, keyword: &str, from: usize) -> Option<usize> {
    let bytes = code.as_bytes();
    let mut from = from;
    while let Some(found) = code.get(from..)?.find(keyword) {
        let at = from + found;
        let before = at.checked_sub(1).map(|k| bytes[k]);
        let after = bytes.get(at + keyword.len()).copied();
        let word = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !word(before) && !word(after) {
            return Some(at);
        }
        from = at + keyword.len();
    }
    None
}

/// The `{` that opens the body of the `fn` at `at`, or `None` if a `;` at
/// depth zero ends the declaration first.
fn body_start(bytes: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, b) in bytes.iter().enumerate().skip(at) {
        match b {
            b'(' | b'[' | b'<' => depth += 1,
            b')' | b']' => depth -= 1,
            // `->` is not a closing angle bracket.
            b'>' if k > 0 && bytes[k - 1] != b'-' => depth -= 1,
            b'{' if depth <= 0 => return Some(k),
            b';' if depth <= 0 => return None,
            _ => {}
        }
    }
    None
}

/// The `}` that closes the `{` at `open`.
fn matching_brace(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// What the allow-list exempts: whole files, and functions by file and name.
#[derive(Debug, Clone, Copy)]
pub struct Allowed<'a> {
    /// Files allowed over [`MAX_FILE_LINES`].
    pub long_files: &'a [&'a str],
    /// `(file, function)` pairs allowed over [`MAX_FN_LINES`].
    pub long_functions: &'a [(&'a str, &'a str)],
}

/// Checks the size rules on `files` (path relative to the root, lexed source;
/// test-only files already left out).
pub fn check(files: &[(String, Lexed)], allowed: Allowed<'_>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut used_files = Vec::new();
    let mut used_functions = Vec::new();
    for (path, lexed) in files {
        let lines = lexed.non_test_lines();
        if lines > MAX_FILE_LINES {
            if allowed.long_files.contains(&path.as_str()) {
                used_files.push(path.as_str());
            } else {
                violations.push(Violation::new(
                    "file-size",
                    format!("{path}: {lines} lines outside tests (at most {MAX_FILE_LINES}): split it by concern"),
                ));
            }
        }
        for function in functions(lexed) {
            if function.lines <= MAX_FN_LINES {
                continue;
            }
            let key = (path.as_str(), function.name.as_str());
            if let Some(entry) = allowed.long_functions.iter().find(|entry| **entry == key) {
                used_functions.push(*entry);
            } else {
                violations.push(Violation::new(
                    "function-size",
                    format!(
                        "{path}:{}: fn {} is {} lines (at most {MAX_FN_LINES})",
                        function.line, function.name, function.lines
                    ),
                ));
            }
        }
    }
    for file in allowed.long_files {
        if !used_files.contains(file) {
            violations.push(Violation::new(
                "allow-list",
                format!(
                    "{file} is allowed to be long but is not (or is gone): remove it from allow.rs"
                ),
            ));
        }
    }
    for (file, function) in allowed.long_functions {
        if !used_functions.contains(&(*file, *function)) {
            violations.push(Violation::new(
                "allow-list",
                format!("{file}: fn {function} is allowed to be long but is not (or is gone): remove it from allow.rs"),
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(lines: usize) -> String {
        "    let x = 1;\n".repeat(lines)
    }

    fn file(source: &str) -> Vec<(String, Lexed)> {
        vec![("crates/x/src/a.rs".to_owned(), Lexed::new(source))]
    }

    const NONE: Allowed<'static> = Allowed {
        long_files: &[],
        long_functions: &[],
    };

    #[test]
    fn functions_are_measured_from_fn_to_closing_brace() {
        let source = format!(
            "fn short() {{}}\nfn f<T: Fn(u8) -> u8>(t: T) -> Vec<u8>\nwhere T: Copy,\n{{\n{}}}\ntrait X {{ fn decl(&self); }}\n",
            body(3)
        );
        let found = functions(&Lexed::new(&source));
        let names: Vec<_> = found.iter().map(|f| (f.name.as_str(), f.lines)).collect();
        assert_eq!(names, [("short", 1), ("f", 7)]);
    }

    #[test]
    fn a_long_function_is_a_violation_unless_allowed() {
        let source = format!("fn long() {{\n{}}}\n", body(MAX_FN_LINES));
        let violations = check(&file(&source), NONE);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].rule, "function-size");

        let allowed = Allowed {
            long_files: &[],
            long_functions: &[("crates/x/src/a.rs", "long")],
        };
        assert!(check(&file(&source), allowed).is_empty());
    }

    #[test]
    fn a_long_file_is_a_violation_but_its_tests_do_not_count() {
        let long = body(MAX_FILE_LINES + 1);
        let violations = check(&file(&long), NONE);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].rule, "file-size");

        let with_tests = format!(
            "{}#[cfg(test)]\nmod tests {{\n{}}}\n",
            body(MAX_FILE_LINES - 10),
            body(200)
        );
        assert!(check(&file(&with_tests), NONE).is_empty());
    }

    #[test]
    fn an_allow_list_entry_that_is_not_needed_is_a_violation() {
        let allowed = Allowed {
            long_files: &["crates/x/src/a.rs"],
            long_functions: &[("crates/x/src/a.rs", "short")],
        };
        let violations = check(&file("fn short() {}\n"), allowed);
        let rules: Vec<_> = violations.iter().map(|v| v.rule).collect();
        assert_eq!(rules, ["allow-list", "allow-list"], "{violations:?}");
    }
}
