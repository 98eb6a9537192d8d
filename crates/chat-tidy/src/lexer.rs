//! A small Rust lexer, just enough for the tidy rules: it blanks comments and
//! the contents of string and character literals (keeping every newline, so
//! line numbers stay true), collects the string literals, and marks the lines
//! that belong to `#[cfg(test)]` items.

/// One source file, lexed.
#[derive(Debug, Clone)]
pub struct Lexed {
    /// The source with comments and literal contents replaced by spaces.
    pub code: String,
    /// Every string literal's contents, with its 1-based line.
    pub strings: Vec<(usize, String)>,
    /// For each line (index 0 = line 1): whether it is inside a `#[cfg(test)]` item.
    pub test_lines: Vec<bool>,
}

impl Lexed {
    /// Lexes `source`.
    pub fn new(source: &str) -> Self {
        let (code, strings) = blank(source);
        let test_lines = test_lines(&code);
        Self {
            code,
            strings,
            test_lines,
        }
    }

    /// Number of lines not inside `#[cfg(test)]` items.
    pub fn non_test_lines(&self) -> usize {
        self.test_lines.iter().filter(|t| !**t).count()
    }

    /// Whether the 1-based `line` is inside a `#[cfg(test)]` item.
    pub fn is_test_line(&self, line: usize) -> bool {
        self.test_lines.get(line - 1).copied().unwrap_or(false)
    }
}

/// The 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn blank(source: &str) -> (String, Vec<(usize, String)>) {
    let mut lexer = Lexer {
        chars: source.chars().collect(),
        out: String::with_capacity(source.len()),
        strings: Vec::new(),
        line: 1,
        i: 0,
    };
    lexer.run();
    (lexer.out, lexer.strings)
}

/// The state of [`blank`]: input, position, output.
struct Lexer {
    chars: Vec<char>,
    out: String,
    strings: Vec<(usize, String)>,
    line: usize,
    i: usize,
}

impl Lexer {
    fn at(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn run(&mut self) {
        while let Some(c) = self.at(0) {
            let next = self.at(1);
            if c == '/' && next == Some('/') {
                while self.at(0).is_some_and(|c| c != '\n') {
                    self.out.push(' ');
                    self.i += 1;
                }
            } else if c == '/' && next == Some('*') {
                self.block_comment();
            } else if let Some(hashes) = raw_string_start(&self.chars, self.i) {
                self.raw_string(hashes);
            } else if c == '"'
                || (c == 'b' && next == Some('"') && !ident_before(&self.chars, self.i))
            {
                self.string();
            } else if c == '\'' {
                self.char_or_lifetime();
            } else {
                self.keep();
            }
        }
    }

    /// Copies the current character.
    fn keep(&mut self) {
        let c = self.chars[self.i];
        if c == '\n' {
            self.line += 1;
        }
        self.out.push(c);
        self.i += 1;
    }

    /// Blanks the current character (a newline stays), and returns it.
    fn skip(&mut self) -> char {
        let c = self.chars[self.i];
        if c == '\n' {
            self.line += 1;
            self.out.push('\n');
        } else {
            self.out.push(' ');
        }
        self.i += 1;
        c
    }

    /// `/* … */`, nested.
    fn block_comment(&mut self) {
        let mut depth = 0;
        while self.at(0).is_some() {
            if self.at(0) == Some('/') && self.at(1) == Some('*') {
                depth += 1;
                self.skip();
                self.skip();
            } else if self.at(0) == Some('*') && self.at(1) == Some('/') {
                depth -= 1;
                self.skip();
                self.skip();
                if depth == 0 {
                    return;
                }
            } else {
                self.skip();
            }
        }
    }

    /// `r"…"`, `r#"…"#`, `br#"…"#`: no escapes; ends at `"` and the same hashes.
    fn raw_string(&mut self, hashes: usize) {
        let start_line = self.line;
        let prefix = if self.chars[self.i] == 'b' { 2 } else { 1 };
        for _ in 0..prefix + hashes + 1 {
            self.keep();
        }
        let mut text = String::new();
        while let Some(c) = self.at(0) {
            if c == '"' && (0..hashes).all(|h| self.at(1 + h) == Some('#')) {
                break;
            }
            text.push(self.skip());
        }
        for _ in 0..=hashes {
            if self.at(0).is_some() {
                self.keep();
            }
        }
        self.strings.push((start_line, text));
    }

    /// `"…"` or `b"…"`, with escapes.
    fn string(&mut self) {
        let start_line = self.line;
        if self.chars[self.i] == 'b' {
            self.keep();
        }
        self.keep();
        let mut text = String::new();
        while let Some(c) = self.at(0) {
            if c == '"' {
                self.keep();
                break;
            }
            if c == '\\' && self.at(1).is_some() {
                text.push(self.skip());
            }
            text.push(self.skip());
        }
        self.strings.push((start_line, text));
    }

    /// A char literal (`'x'`, `'\n'`, `'\u{1F600}'`, `'\''`) or a lifetime (`'a`).
    fn char_or_lifetime(&mut self) {
        let end = if self.at(1) == Some('\\') {
            (3..16).find(|&k| self.at(k) == Some('\''))
        } else if self.at(2) == Some('\'') {
            Some(2)
        } else {
            None
        };
        self.keep();
        if let Some(end) = end {
            for _ in 1..end {
                self.skip();
            }
            self.keep();
        }
    }
}

/// If a raw string starts at `i` (`r"`, `r#"`, `br"`, `br#"`), its number of `#`.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    if ident_before(chars, i) {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(hashes)
}

/// Whether the character before `i` continues an identifier (so `br"` in
/// `abr"` is not a literal prefix).
fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Marks the lines of every item that follows a `#[cfg(test)]` attribute: up
/// to the end of its first brace block, or its `;` (as in `mod tests;`).
fn test_lines(code: &str) -> Vec<bool> {
    let lines = code.lines().count().max(1);
    let mut marks = vec![false; lines + 1];
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(found) = code[from..].find("#[cfg(test)]") {
        let start = from + found;
        let mut end = start;
        let mut depth = 0usize;
        for (k, b) in bytes.iter().enumerate().skip(start + "#[cfg(test)]".len()) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    end = k;
                    break;
                }
                _ => {}
            }
            end = k;
        }
        for line in line_of(code, start)..=line_of(code, end) {
            if let Some(mark) = marks.get_mut(line - 1) {
                *mark = true;
            }
        }
        from = end.max(start + 1);
    }
    marks.truncate(lines);
    marks
}

/// The `mod name;` declarations under `#[cfg(test)]`: their files are test code.
pub fn test_module_files(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(found) = rest.find("#[cfg(test)]") {
        rest = &rest[found + "#[cfg(test)]".len()..];
        let item = rest.trim_start();
        let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
        let item = item.strip_prefix("pub ").unwrap_or(item);
        if let Some(decl) = item.strip_prefix("mod ") {
            if let Some((name, _)) = decl.split_once(';') {
                let name = name.trim();
                if name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    names.push(name.to_owned());
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_literals_are_blanked_and_lines_kept() {
        let source = "fn a() { // { not a brace\n  let s = \"}{\";\n  let c = '{';\n  /* } */ let r = r#\"\"}\"#; }\nfn b<'x>(v: &'x str) {}\n";
        let lexed = Lexed::new(source);
        assert_eq!(lexed.code.lines().count(), source.lines().count());
        assert_eq!(lexed.code.matches('{').count(), 2, "{}", lexed.code);
        assert_eq!(lexed.code.matches('}').count(), 2, "{}", lexed.code);
        assert!(
            lexed.code.contains("<'x>"),
            "lifetimes stay: {}",
            lexed.code
        );
        let strings: Vec<_> = lexed.strings.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(strings, ["}{", "\"}"]);
    }

    #[test]
    fn cfg_test_items_are_marked() {
        let source = "fn a() {}\n#[cfg(test)]\nmod tests {\n  fn b() {}\n}\nfn c() {}\n#[cfg(test)]\nmod more;\n";
        let lexed = Lexed::new(source);
        assert_eq!(
            lexed.test_lines,
            [false, true, true, true, true, false, true, true]
        );
        assert_eq!(lexed.non_test_lines(), 2);
        assert_eq!(test_module_files(&lexed.code), ["more"]);
    }
}
