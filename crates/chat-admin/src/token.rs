//! `chat-admin token`: mints an HS256 JWT for development and tests, signed
//! with the same secret file the gateways read (`--auth-jwt-secret-file`).
//! No gateway is asked.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The claims a gateway reads (see its `auth.rs`).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Claims {
    pub(crate) sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    pub(crate) iat: u64,
    pub(crate) nbf: u64,
    pub(crate) exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rooms: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) iss: Option<String>,
}

/// Reads the secret (trimmed, as the gateway trims it) and signs `claims`.
pub(crate) fn mint(secret_file: &Path, claims: &Claims) -> Result<String, String> {
    let raw = std::fs::read(secret_file)
        .map_err(|e| format!("--secret-file {}: {e}", secret_file.display()))?;
    let secret = raw.trim_ascii();
    if secret.is_empty() {
        return Err(format!("--secret-file {}: empty", secret_file.display()));
    }
    if claims.sub.is_empty() {
        return Err("--sub must not be empty".into());
    }
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("signing the token: {e}"))
}

/// `90s`, `30m`, `1h`, `7d`, or plain seconds.
pub(crate) fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => raw.split_at(at),
        None => (raw, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 90s, 30m, 1h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(scale)
        .filter(|secs| *secs > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} must be more than 0 and not absurdly long"))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{decode, DecodingKey, Validation};
    use serde_json::Value;

    use super::*;

    #[test]
    fn a_minted_token_verifies_with_the_same_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: "alice".into(),
            name: Some("Alice".into()),
            iat: now,
            nbf: now,
            exp: now + 3600,
            rooms: Some(vec!["a".into(), "b*".into()]),
            aud: Some("chat".into()),
            iss: None,
        };
        let token = mint(&path, &claims).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&["chat"]);
        let data = decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["name"], "Alice");
        assert_eq!(data.claims["rooms"], serde_json::json!(["a", "b*"]));
        assert!(data.claims.get("iss").is_none());
        assert!(mint(&dir.path().join("missing"), &claims).is_err());
    }

    #[test]
    fn ttls_take_a_unit() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "0s", "1w", "h", "-1h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
