//! Secrets from files: the `-file` form of every secret flag, so that no
//! secret has to appear on a command line (where `ps` shows it to every user
//! of the host) or in an environment a process listing can read.

use std::path::{Path, PathBuf};

use crate::config::{AdminToken, Config};

/// Reads the secret in `path` (given as `flag`): the whole file less a
/// trailing newline. The error names the flag and the file, never the contents.
pub fn read_secret_file(flag: &str, path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))?;
    let mut text = String::from_utf8(bytes)
        .map_err(|_| format!("{flag} {}: the file is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(format!("{flag} {}: the file is empty", path.display()));
    }
    Ok(text)
}

/// Takes the file of a secret flag (so that loading twice reads once) and
/// reads it; refuses the flag and its `-file` form together.
fn load(
    flag: &str,
    file: &mut Option<PathBuf>,
    already_set: bool,
) -> Result<Option<String>, String> {
    let Some(path) = file.take() else {
        return Ok(None);
    };
    if already_set {
        return Err(format!("give {flag} or {flag}-file, not both"));
    }
    read_secret_file(&format!("{flag}-file"), &path).map(Some)
}

impl Config {
    /// Reads the secrets given as files (`--admin-token-file`,
    /// `--redis-file`) into their settings. `run` calls it too, so a config
    /// built by a test may name files; after the first call the files are
    /// forgotten and later calls change nothing.
    pub fn load_secrets(&mut self) -> Result<(), String> {
        let token_set = self.admin_token.is_some();
        if let Some(token) = load("--admin-token", &mut self.admin_token_file, token_set)? {
            self.admin_token = Some(AdminToken::from_secret(token));
        }
        let redis_set = self.redis.is_some();
        if let Some(url) = load("--redis", &mut self.redis_file, redis_set)? {
            self.redis = Some(url);
        }
        let cluster_set = self.redis_cluster.is_some();
        if let Some(seeds) = load("--redis-cluster", &mut self.redis_cluster_file, cluster_set)? {
            self.redis_cluster = Some(seeds);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("chat-gateway").chain(args.iter().copied())).unwrap()
    }

    fn file(dir: &tempfile::TempDir, name: &str, contents: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn a_token_file_is_read_less_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        for (contents, expected) in [
            ("s3cret\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret\n\n", "s3cret\n"),
        ] {
            let path = file(&dir, "token", contents);
            let mut config = parse(&["--admin-token-file", &path]);
            config.load_secrets().unwrap();
            assert_eq!(config.admin_token.as_ref().unwrap().as_str(), expected);
            // Loaded once; a second call keeps it.
            config.load_secrets().unwrap();
            assert_eq!(config.admin_token.as_ref().unwrap().as_str(), expected);
        }
        // "s3cret\n" less one newline is valid; a token with a newline inside is not.
        let path = file(&dir, "two-lines", "s3cret\n\n");
        let mut config = parse(&["--admin-token-file", &path]);
        config.load_secrets().unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn a_missing_or_empty_file_or_both_forms_are_errors_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let mut config = parse(&["--admin-token-file", missing.to_str().unwrap()]);
        let err = config.load_secrets().unwrap_err();
        assert!(err.starts_with("--admin-token-file "), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let empty = file(&dir, "empty", "\n");
        let err = parse(&["--admin-token-file", &empty])
            .load_secrets()
            .unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let path = file(&dir, "token", "from-the-file\n");
        let err = parse(&["--admin-token", "on-the-line", "--admin-token-file", &path])
            .load_secrets()
            .unwrap_err();
        assert_eq!(err, "give --admin-token or --admin-token-file, not both");
        assert!(!err.contains("on-the-line") && !err.contains("from-the-file"));
    }

    #[test]
    fn the_redis_url_may_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, "redis", "redis://:pw@127.0.0.1:6379\n");
        let mut config = parse(&["--redis-file", &path]);
        config.load_secrets().unwrap();
        assert_eq!(config.redis.as_deref(), Some("redis://:pw@127.0.0.1:6379"));
        let err = parse(&["--redis", "redis://x:1", "--redis-file", &path])
            .load_secrets()
            .unwrap_err();
        assert_eq!(err, "give --redis or --redis-file, not both");
    }
}
