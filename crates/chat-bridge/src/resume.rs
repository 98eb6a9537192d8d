//! Resume tokens: the secret a session's Welcome carries so that the next
//! session of the same client can take over its name and presence
//! (`Hello.resume_token`).
//!
//! A token is 256 random bits from the OS, as 64 lowercase hex characters.
//! Only its SHA-256 ([`TokenHash`]) leaves the gateway: the bridge stores the
//! hash with the name claim, and a presented token is hashed and compared
//! with the stored hash in constant time. Neither type prints its secret
//! (`Debug` is redacted), so a token cannot reach a log by accident.

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// A freshly issued token, for one Welcome.
pub struct ResumeToken {
    token: String,
    hash: TokenHash,
}

/// SHA-256 of a token, as stored in the cluster (64 hex characters).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl ResumeToken {
    /// A new token from the operating system's random source.
    ///
    /// # Panics
    /// When the OS has no random source (nothing sensible can go on then).
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source is available");
        let token = hex(&secret);
        let hash = TokenHash::of(&token);
        Self { token, hash }
    }

    /// The secret, for the Welcome frame only.
    pub fn secret(&self) -> &str {
        &self.token
    }

    /// Its hash, the form stored with the name claim.
    pub fn hash(&self) -> &TokenHash {
        &self.hash
    }
}

impl TokenHash {
    /// The hash of a presented token.
    pub fn of(token: &str) -> Self {
        Self(hex(&Sha256::digest(token.as_bytes())))
    }

    /// Reads a stored hash back; `None` unless it has the stored form.
    pub fn from_stored(stored: &str) -> Option<Self> {
        (stored.len() == 64 && stored.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(stored.to_ascii_lowercase()))
    }

    /// The form stored in the cluster.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two hashes are equal, in time independent of where they differ.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeToken(..)")
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_fresh_printable_and_match_only_their_hash() {
        let a = ResumeToken::generate();
        let b = ResumeToken::generate();
        assert_eq!(a.secret().len(), 64, "256 bits as hex");
        assert!(a.secret().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.secret(), b.secret());
        assert!(TokenHash::of(a.secret()).matches(a.hash()));
        assert!(!TokenHash::of(b.secret()).matches(a.hash()));
        assert!(!TokenHash::of("").matches(a.hash()));
        assert_ne!(a.hash().as_str(), a.secret(), "only the hash is stored");
    }

    #[test]
    fn stored_hashes_round_trip_and_junk_is_refused() {
        let token = ResumeToken::generate();
        let stored = TokenHash::from_stored(token.hash().as_str()).unwrap();
        assert!(stored.matches(token.hash()));
        for junk in ["", "abc", &"z".repeat(64), &"a".repeat(63)] {
            assert!(TokenHash::from_stored(junk).is_none(), "{junk:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let token = ResumeToken::generate();
        let shown = format!("{token:?} {:?}", token.hash());
        assert!(!shown.contains(token.secret()));
        assert!(!shown.contains(token.hash().as_str()));
    }
}
