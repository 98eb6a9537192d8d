//! Where test processes write their logs, and how the files are named.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// `$CHAT_TEST_ARTIFACTS`, or `test-artifacts/logs` at the workspace root.
pub fn artifacts_dir() -> PathBuf {
    match std::env::var_os("CHAT_TEST_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-artifacts/logs"),
    }
}

/// The running test's name (libtest names the thread after it), made file-safe.
pub(crate) fn test_name() -> String {
    let thread = std::thread::current();
    let name = match thread.name() {
        Some(name) if name != "main" && !name.starts_with("tokio-runtime") => name,
        _ => "test",
    };
    let name = name.rsplit("::").next().unwrap_or(name);
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A process-unique number, to tell apart several processes of one test.
pub(crate) fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A fresh log file path `<dir>/<test>-<label>.log`, the directory created.
pub(crate) fn log_path(label: &str) -> std::io::Result<PathBuf> {
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(format!("{}-{label}.log", test_name())))
}
