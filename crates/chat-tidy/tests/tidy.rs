//! The tidy test: every rule of `chat-tidy` on this repository. A failure
//! lists each broken rule with the file and line, and what to do.

use std::path::Path;

#[test]
fn the_repository_keeps_its_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let violations = chat_tidy::check_repository(&root).expect("the repository can be read");
    let shown: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "{} tidy violation(s):\n{}",
        violations.len(),
        shown.join("\n")
    );
}
