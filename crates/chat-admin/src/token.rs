//! `chat-admin token`: mints an HS256 JWT for development and tests, signed
//! with the same secret file the gateways read (`--auth-jwt-secret-file`).
//! No gateway is asked.

use std::path::Path;

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
}
