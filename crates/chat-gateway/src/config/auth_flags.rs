//! The signed-identity flags (`--auth-*`), flattened into the gateway's
//! [`Config`](super::Config); what they mean is `crate::auth`'s.

use std::path::PathBuf;

use clap::Args;

/// Where the keys that sign the clients' JWTs come from, and the claims
/// every token must carry. No key: anonymous mode.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthFlags {
    /// File holding the HS256 secret (at least 32 bytes) that signs the
    /// clients' JWTs: with it (or any key), Hello.token must be a valid
    /// token and the identity is its `sub` (see README, "Identities").
    #[arg(long, env = "CHAT_AUTH_JWT_SECRET_FILE")]
    pub auth_jwt_secret_file: Option<PathBuf>,

    /// PEM file of a public key (RSA: RS256, EC P-256: ES256) that signs the
    /// clients' JWTs; repeat it (or separate with commas) to trust several
    /// during a key rotation.
    #[arg(long, env = "CHAT_AUTH_JWT_PUBLIC_KEY", value_delimiter = ',')]
    pub auth_jwt_public_key: Vec<PathBuf>,

    /// JSON Web Key Set file (`{"keys": [...]}`) of the keys that sign the
    /// clients' JWTs (a token's `kid` selects one).
    #[arg(long, env = "CHAT_AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<PathBuf>,

    /// The audience (`aud`) every token must name.
    #[arg(long, env = "CHAT_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,

    /// The issuer (`iss`) every token must name.
    #[arg(long, env = "CHAT_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
}

impl AuthFlags {
    /// The files and claims, as `crate::auth` reads them.
    pub(crate) fn files(&self) -> crate::auth::AuthFiles<'_> {
        crate::auth::AuthFiles {
            secret_file: self.auth_jwt_secret_file.as_deref(),
            public_keys: &self.auth_jwt_public_key,
            jwks_file: self.auth_jwks_file.as_deref(),
            audience: self.auth_audience.as_deref(),
            issuer: self.auth_issuer.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::Config;

    #[test]
    fn the_auth_flags_take_files_and_repeat_public_keys() {
        let config = Config::try_parse_from([
            "chat-gateway",
            "--auth-jwt-public-key",
            "a.pem,b.pem",
            "--auth-jwt-public-key",
            "c.pem",
            "--auth-audience",
            "chat",
        ])
        .unwrap();
        let keys: Vec<_> = config
            .auth
            .auth_jwt_public_key
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(keys, ["a.pem", "b.pem", "c.pem"]);
        assert_eq!(config.auth.auth_audience.as_deref(), Some("chat"));
        assert!(config.auth.auth_jwt_secret_file.is_none());
        // A key file that cannot be read is a configuration error naming the flag...
        let err = config.validate().unwrap_err();
        assert!(err.starts_with("--auth-jwt-public-key a.pem"), "{err}");
        // ...and so is an audience without a key.
        let config = Config::try_parse_from(["chat-gateway", "--auth-audience", "chat"]).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.contains("need a key"), "{err}");
    }
}
