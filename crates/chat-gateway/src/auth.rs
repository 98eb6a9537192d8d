//! Signed identities: the keys a gateway trusts (`--auth-jwt-secret-file`,
//! `--auth-jwt-public-key`, `--auth-jwks-file`) and the check of a Hello's
//! JWT against them. Pure: no socket, no clock of its own (the caller passes
//! the time), so every rule is unit-tested here.
//!
//! With any key configured, a Hello must carry a JWT signed by one of the
//! keys with that key's algorithm (`alg: none` and any other algorithm are
//! refused), with `exp` (required), `nbf` and `iat` within [`LEEWAY_SECS`] of
//! now, and the configured audience and issuer. The identity is `sub`; the
//! display name the `name` claim (falling back to `sub`); the optional
//! `rooms` claim limits the rooms the session may join.

use std::path::Path;
use std::str::FromStr as _;

use chat_proto::{normalize_room, normalize_username};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Clock skew allowed between the token's issuer and the gateway, in
/// seconds: on `exp`, `nbf` and `iat`, and on the end of a connection at `exp`.
pub(crate) const LEEWAY_SECS: u64 = 5;

/// The smallest HS256 secret accepted (bytes): RFC 7518 3.2 asks for a key
/// at least as long as the hash.
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// The longest `sub` accepted (bytes): it is the identity key, stored with
/// every presence entry and message.
const MAX_SUB_BYTES: usize = 256;

/// One trusted key and the one algorithm tokens signed with it must name.
struct TrustedKey {
    algorithm: Algorithm,
    key: DecodingKey,
    /// The JWKS `kid`: a token naming a kid is checked against that key only.
    kid: Option<String>,
}

/// The keys a gateway trusts and the claims it requires.
pub(crate) struct Verifier {
    keys: Vec<TrustedKey>,
    audience: Option<String>,
    issuer: Option<String>,
}

/// Where the keys and required claims come from (the gateway's flags).
#[derive(Debug, Default, Clone)]
pub(crate) struct AuthFiles<'a> {
    pub(crate) secret_file: Option<&'a Path>,
    pub(crate) public_keys: &'a [std::path::PathBuf],
    pub(crate) jwks_file: Option<&'a Path>,
    pub(crate) audience: Option<&'a str>,
    pub(crate) issuer: Option<&'a str>,
}

/// Who a valid token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `sub`: the identity key (presence, idempotency keys, kicks, bans).
    pub(crate) key: String,
    /// The `name` claim (or `sub`), as a valid display name.
    pub(crate) display: String,
    /// The rooms the token allows (`None`: any).
    pub(crate) rooms: Option<RoomGrant>,
    /// `exp`, seconds since the epoch.
    pub(crate) expires_at: u64,
}

/// The `rooms` claim: room names, a trailing `*` matching any suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomGrant {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl RoomGrant {
    fn new(patterns: &[String]) -> Self {
        let mut grant = Self {
            exact: Vec::new(),
            prefixes: Vec::new(),
        };
        for pattern in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) => grant.prefixes.push(nfc_prefix(prefix)),
                None => {
                    if let Ok(room) = normalize_room(pattern) {
                        grant.exact.push(room);
                    }
                }
            }
        }
        grant
    }

    /// Whether the room (an NFC name, as `normalize_room` returns) is allowed.
    pub(crate) fn allows(&self, room: &str) -> bool {
        self.exact.iter().any(|r| r == room) || self.prefixes.iter().any(|p| room.starts_with(p))
    }
}

/// A room-name prefix in the form rooms are compared in (NFC); an empty
/// prefix (`*`) matches every room.
fn nfc_prefix(prefix: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    prefix.nfc().collect()
}

/// Why a token was refused (the text of the INVALID_TOKEN error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) String);

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    name: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    rooms: Option<Vec<String>>,
}

impl Verifier {
    /// The verifier the flags describe, `None` when no key is configured
    /// (anonymous mode). Errors name the flag and the file.
    pub(crate) fn load(files: &AuthFiles<'_>) -> Result<Option<Self>, String> {
        let mut keys = Vec::new();
        if let Some(path) = files.secret_file {
            let raw = read(path, "--auth-jwt-secret-file")?;
            let secret = raw.trim_ascii();
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "--auth-jwt-secret-file {}: the secret must be at least {MIN_SECRET_BYTES} bytes",
                    path.display()
                ));
            }
            keys.push(TrustedKey {
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
                kid: None,
            });
        }
        for path in files.public_keys {
            keys.push(public_key(path)?);
        }
        if let Some(path) = files.jwks_file {
            keys.extend(jwks(path)?);
        }
        if keys.is_empty() {
            if files.audience.is_some() || files.issuer.is_some() {
                return Err("--auth-audience and --auth-issuer need a key (--auth-jwt-secret-file, --auth-jwt-public-key or --auth-jwks-file)".into());
            }
            return Ok(None);
        }
        Ok(Some(Self {
            keys,
            audience: files.audience.map(str::to_owned),
            issuer: files.issuer.map(str::to_owned),
        }))
    }

    /// Checks `token` at `now` (seconds since the epoch).
    pub(crate) fn verify(&self, token: &str, now: u64) -> Result<Identity, Refused> {
        if token.is_empty() {
            return Err(Refused("a signed token is required (Hello.token)".into()));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Refused(format!("malformed token: {e}")))?;
        let candidates: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(Refused(format!(
                "tokens signed with {:?} are not accepted",
                header.alg
            )));
        }
        let mut last = Refused("bad signature".into());
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(key.algorithm)) {
                Ok(data) => return identity(data.claims, now),
                Err(e) => {
                    last = refusal(&e);
                    // Only a bad signature is worth trying the next key for.
                    if !matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// The library's checks: the one algorithm, `exp` required, `exp`
    /// and `nbf` with [`LEEWAY_SECS`] against the system clock, audience and
    /// issuer when configured. (`iat` and `exp` are checked again against
    /// the caller's `now` in [`identity`].)
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        v.validate_aud = self.audience.is_some();
        if let Some(aud) = &self.audience {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        v
    }
}

/// The identity of checked claims, or why they do not make one.
fn identity(claims: Claims, now: u64) -> Result<Identity, Refused> {
    let exp = claims
        .exp
        .ok_or_else(|| Refused("the token lacks the exp claim".into()))?;
    if exp.saturating_add(LEEWAY_SECS) < now {
        return Err(Refused("the token has expired".into()));
    }
    if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
        return Err(Refused("the token is issued in the future (iat)".into()));
    }
    let sub = claims
        .sub
        .filter(|s| !s.is_empty() && s.len() <= MAX_SUB_BYTES && !s.chars().any(char::is_control))
        .ok_or_else(|| {
            Refused(format!(
                "the token needs a sub of 1 to {MAX_SUB_BYTES} bytes without control characters"
            ))
        })?;
    let display = claims
        .name
        .as_deref()
        .and_then(|name| normalize_username(name).ok())
        .or_else(|| normalize_username(&sub).ok())
        .or_else(|| normalize_username(&sub.chars().take(32).collect::<String>()).ok())
        .map(|name| name.display)
        .ok_or_else(|| Refused("neither the name claim nor sub is a usable name".into()))?;
    Ok(Identity {
        key: sub,
        display,
        rooms: claims.rooms.as_deref().map(RoomGrant::new),
        expires_at: exp,
    })
}

/// The INVALID_TOKEN text for a library error (never the token itself).
fn refusal(e: &jsonwebtoken::errors::Error) -> Refused {
    use jsonwebtoken::errors::ErrorKind as K;
    let text = match e.kind() {
        K::ExpiredSignature => "the token has expired",
        K::ImmatureSignature => "the token is not valid yet (nbf)",
        K::InvalidSignature => "bad signature",
        K::InvalidAlgorithm => "wrong algorithm",
        K::InvalidAudience => "wrong audience",
        K::InvalidIssuer => "wrong issuer",
        K::MissingRequiredClaim(claim) => {
            return Refused(format!("the token lacks the {claim} claim"))
        }
        _ => return Refused(format!("malformed token: {e}")),
    };
    Refused(text.into())
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// A PEM public key: RSA (RS256) or EC P-256 (ES256).
fn public_key(path: &Path) -> Result<TrustedKey, String> {
    let pem = read(path, "--auth-jwt-public-key")?;
    let (algorithm, key) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, key)
    } else {
        return Err(format!(
            "--auth-jwt-public-key {}: not an RSA or EC public key in PEM",
            path.display()
        ));
    };
    Ok(TrustedKey {
        algorithm,
        key,
        kid: None,
    })
}

/// The keys of a JWKS file (`{"keys": [...]}`): each with its `alg`, or
/// RS256 for RSA and ES256 for P-256 keys that name none.
fn jwks(path: &Path) -> Result<Vec<TrustedKey>, String> {
    let raw = read(path, "--auth-jwks-file")?;
    let bad = |what: String| format!("--auth-jwks-file {}: {what}", path.display());
    let set: JwkSet = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
    if set.keys.is_empty() {
        return Err(bad("no keys".into()));
    }
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let named = jwk
            .common
            .key_algorithm
            .map(|a| Algorithm::from_str(&a.to_string()))
            .transpose()
            .map_err(|e| bad(format!("key {kid:?}: {e}")))?;
        let algorithm = match (&jwk.algorithm, named) {
            (_, Some(alg)) => alg,
            (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(ec), None) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => return Err(bad(format!("key {kid:?}: name its alg"))),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {kid:?}: {e}")))?;
        keys.push(TrustedKey {
            algorithm,
            key,
            kid,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
