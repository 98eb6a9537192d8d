//! The bearer token: given with `--token` or, so that it shows in no process
//! listing, read from `--token-file` (the file the gateways'
//! `--admin-token-file` reads, typically).

use std::path::Path;

use crate::connection::{exit, Failure};

/// The token to send, from `--token` or `--token-file` (not both). A file
/// loses one trailing newline; errors name the file, never its contents.
pub(crate) fn resolve(
    token: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, Failure> {
    let usage = |message: String| Failure {
        code: exit::USAGE,
        message,
    };
    let Some(path) = file else {
        return Ok(token);
    };
    if token.is_some() {
        return Err(usage("give --token or --token-file, not both".into()));
    }
    let shown = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| usage(format!("--token-file {shown}: cannot read it: {e}")))?;
    let mut text = String::from_utf8(bytes)
        .map_err(|_| usage(format!("--token-file {shown}: the file is not UTF-8 text")))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(usage(format!("--token-file {shown}: the file is empty")));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_flag_or_the_file_less_its_newline() {
        let dir = std::env::temp_dir().join(format!("chat-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        assert_eq!(
            resolve(Some("t".into()), None).unwrap().as_deref(),
            Some("t")
        );
        assert_eq!(resolve(None, None).unwrap(), None);
        assert_eq!(
            resolve(None, Some(&file)).unwrap().as_deref(),
            Some("s3cret")
        );
        let both = resolve(Some("flag-token".into()), Some(&file)).unwrap_err();
        assert_eq!(both.code, exit::USAGE);
        assert!(!both.message.contains("s3cret") && !both.message.contains("flag-token"));
        std::fs::write(&file, "\n").unwrap();
        assert!(resolve(None, Some(&file))
            .unwrap_err()
            .message
            .contains("empty"));
        let missing = resolve(None, Some(&dir.join("missing"))).unwrap_err();
        assert_eq!(missing.code, exit::USAGE);
        assert!(missing.message.starts_with("--token-file "), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
