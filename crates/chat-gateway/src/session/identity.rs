//! Who a session is: the name a Hello types (anonymous mode) or the identity
//! a Hello's signed token names (with `--auth-jwt-*` keys, see `crate::auth`),
//! the end of a session whose token expires, and the rooms a token allows.

use chat_proto::v1::{ErrorCode, Hello};
use chat_proto::Username;
use tokio::time::Instant;

use super::rules::{self, HelloRefusal, Rejection};
use super::Session;
use crate::auth::{Identity, LEEWAY_SECS};
use crate::conn::close_code;

impl Session {
    /// The identity key of this session: the normalised name in anonymous
    /// mode, the token's `sub` with signed identities. Presence, idempotency
    /// keys, kicks (and bans) are keyed by it. Empty before the Welcome.
    pub(crate) fn identity(&self) -> &str {
        &self.key
    }

    /// Whether identities are signed (a key is configured): then names are
    /// not claimed, and one identity may hold several sessions.
    pub(super) fn signed_identities(&self) -> bool {
        self.shared.auth.is_some()
    }

    /// Who `hello` says the client is, or `None` when it was answered with
    /// an error (and, for a refused token, the connection is closing 4003).
    pub(super) fn who(&mut self, r: u64, hello: &Hello) -> Option<Username> {
        let welcomed = self.member.is_some();
        let Some(verifier) = &self.shared.auth else {
            return match rules::check_hello(hello, welcomed) {
                Ok(name) => Some(name),
                Err(HelloRefusal::Again(rejection)) => {
                    self.reject(r, rejection);
                    None
                }
                Err(HelloRefusal::Invalid(rejection)) => {
                    self.hello_refused(r, rejection);
                    None
                }
            };
        };
        if welcomed {
            self.reject(r, rules::hello_again());
            return None;
        }
        match verifier.verify(&hello.token, unix_now()) {
            Ok(identity) => Some(self.adopt(identity)),
            Err(refused) => {
                tracing::debug!(reason = %refused, "token refused");
                self.end_for_token(r, format!("invalid token: {refused}"));
                None
            }
        }
    }

    /// Takes a verified token's identity: its rooms, and the end of the
    /// session at `exp` (with the leeway the check allowed).
    fn adopt(&mut self, identity: Identity) -> Username {
        let left = (identity.expires_at + LEEWAY_SECS).saturating_sub(unix_now());
        self.token_expires = Some(Instant::now() + std::time::Duration::from_secs(left));
        self.room_grant = identity.rooms;
        Username {
            display: identity.display,
            key: identity.key,
        }
    }

    /// Ends the session because its token expired (at `exp`): the client
    /// may come back with a fresh one and resume.
    pub(super) fn token_expired(&mut self) {
        self.token_expires = None;
        tracing::debug!("token expired");
        self.end_for_token(0, "the token has expired: reconnect with a new one".into());
    }

    /// `Error INVALID_TOKEN`, then close 4003.
    fn end_for_token(&mut self, r: u64, message: String) {
        self.error(r, ErrorCode::InvalidToken, message);
        self.conn.close(close_code::INVALID_TOKEN);
    }

    /// Whether the token lets this session join `room` (an NFC name).
    pub(super) fn room_allowed(&self, room: &str) -> Result<(), Rejection> {
        match &self.room_grant {
            Some(grant) if !grant.allows(room) => Err(rules::room_not_allowed(room)),
            _ => Ok(()),
        }
    }
}

/// Seconds since the epoch (token times are in these).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
