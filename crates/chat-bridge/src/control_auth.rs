//! Authentication of the control path: commands between gateways (kick,
//! drain and its answer, the takeover of a resumed session) are signed with
//! a secret every gateway of the cluster shares (`--cluster-secret-file`),
//! so that write access to the control channel alone cannot steer gateways.
//!
//! A signed command travels as
//! `S<timestamp ms>\n<nonce: 32 hex>\n<HMAC: 64 hex>\n<command>`, where the
//! HMAC-SHA256 covers the channel's name, the timestamp, the nonce and the
//! command bytes (each length-prefixed, so no two inputs share a MAC input).
//! A receiving gateway with the secret carries a command out only when
//! - the MAC is right (checked in constant time, before anything else),
//! - its timestamp is within [`CONTROL_WINDOW`] of the receiver's clock
//!   (either way: clocks differ a little), and
//! - it has not seen the same signed command before: every accepted MAC is
//!   remembered until its timestamp leaves the window, at most
//!   [`REMEMBERED_MAX`] of them (only validly signed commands are
//!   remembered, so no one without the secret can fill the memory).
//!
//! Anything else is dropped and reported as a [`ControlRejection`].
//!
//! Without a secret a gateway runs its control path unauthenticated (and
//! says so at start): it sends commands unsigned and carries out unsigned
//! ones, and the commands inside signed envelopes too (it cannot check them;
//! this keeps a cluster working while the secret is rolled out).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit as _, Mac as _};
use parking_lot::Mutex;
use sha2::Sha256;

use crate::resume::hex;

/// How far a signed command's timestamp may be from the receiver's clock;
/// older (or newer) commands are dropped as stale, and accepted ones are
/// remembered this long to refuse replays.
pub const CONTROL_WINDOW: Duration = Duration::from_secs(30);

/// Signed commands remembered at most (about 80 bytes each); past it, new
/// commands are dropped as replays until old ones leave the window. Far
/// above what a cluster sends in [`CONTROL_WINDOW`] (a resume storm of a
/// hundred thousand takeovers included).
pub const REMEMBERED_MAX: usize = 131_072;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// Tag of a signed envelope (no command uses it).
const SIGNED: char = 'S';

type HmacSha256 = Hmac<Sha256>;

/// The secret the gateways of one cluster share. Its `Debug` output is
/// redacted, so a logged configuration never shows it.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl ClusterSecret {
    /// A secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the cluster secret must be at least {MIN_SECRET_BYTES} bytes (try `openssl rand -hex 32`)"
            ));
        }
        Ok(Self(Arc::from(bytes)))
    }

    /// The contents of `path`, without trailing whitespace (the newline
    /// an editor or `echo` adds).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let raw = std::fs::read(path)
            .map_err(|e| format!("reading the cluster secret {}: {e}", path.display()))?;
        let end = raw
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |at| at + 1);
        Self::new(&raw[..end]).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Why a command on the control channel was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRejection {
    /// Not signed, on a gateway that has a secret.
    Unsigned,
    /// Signed with another secret, altered, or not a well-formed envelope.
    BadSignature,
    /// Its timestamp is more than [`CONTROL_WINDOW`] away.
    Stale,
    /// The same signed command was carried out already (or too many
    /// commands are remembered: see [`REMEMBERED_MAX`]).
    Replayed,
}

impl ControlRejection {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Self; 4] = [
        Self::Unsigned,
        Self::BadSignature,
        Self::Stale,
        Self::Replayed,
    ];

    /// The reason as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Stale => "stale",
            Self::Replayed => "replayed",
        }
    }
}

/// Signs what a gateway sends and checks what it receives on one channel.
pub(crate) struct ControlAuth {
    secret: Option<ClusterSecret>,
    /// The channel's name, bound into every MAC (a command signed for one
    /// cluster's prefix is worthless on another sharing the secret).
    channel: String,
    /// Accepted MACs (sync lock: held only to look up and insert).
    seen: Mutex<Seen>,
}

/// Accepted MACs, each until its timestamp leaves the window.
#[derive(Default)]
struct Seen {
    /// MAC -> the time (ms) after which its timestamp is out of the window.
    until: HashMap<[u8; 32], u64>,
    /// Insertions since the last sweep of expired entries.
    since_sweep: usize,
}

impl ControlAuth {
    pub(crate) fn new(secret: Option<ClusterSecret>, channel: &str) -> Self {
        Self {
            secret,
            channel: channel.to_owned(),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Whether commands are signed and checked.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.secret.is_some()
    }

    /// The payload to publish for `command`: signed when there is a secret.
    pub(crate) fn seal(&self, command: &str, now_ms: u64) -> String {
        let Some(secret) = &self.secret else {
            return command.to_owned();
        };
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let nonce = hex(&nonce);
        let ts = now_ms.to_string();
        let tag = hex(&self.tag(secret, &ts, &nonce, command.as_bytes()));
        format!("{SIGNED}{ts}\n{nonce}\n{tag}\n{command}")
    }

    /// The command inside `payload`, if it may be carried out at `now_ms`.
    pub(crate) fn open<'a>(
        &self,
        payload: &'a [u8],
        now_ms: u64,
    ) -> Result<&'a [u8], ControlRejection> {
        let envelope = Envelope::parse(payload);
        let Some(secret) = &self.secret else {
            return Ok(envelope.map_or(payload, |e| e.command));
        };
        let Some(envelope) = envelope else {
            return Err(if payload.first() == Some(&(SIGNED as u8)) {
                ControlRejection::BadSignature
            } else {
                ControlRejection::Unsigned
            });
        };
        let mut mac = secret.mac();
        self.feed(&mut mac, envelope.ts, envelope.nonce, envelope.command);
        let tag: [u8; 32] = envelope.tag;
        mac.verify_slice(&tag)
            .map_err(|_| ControlRejection::BadSignature)?;
        let ts: u64 = envelope
            .ts
            .parse()
            .map_err(|_| ControlRejection::BadSignature)?;
        let window = CONTROL_WINDOW.as_millis() as u64;
        if now_ms.abs_diff(ts) > window {
            return Err(ControlRejection::Stale);
        }
        self.remember(tag, ts.saturating_add(window), now_ms)?;
        Ok(envelope.command)
    }

    /// Remembers an accepted MAC until `until_ms`; `Replayed` when it was
    /// seen already, or when the memory is full.
    fn remember(&self, tag: [u8; 32], until_ms: u64, now_ms: u64) -> Result<(), ControlRejection> {
        let mut seen = self.seen.lock();
        if seen.until.contains_key(&tag) {
            return Err(ControlRejection::Replayed);
        }
        // Sweeping every 1024 insertions keeps the cost per command constant.
        if seen.until.len() >= REMEMBERED_MAX || seen.since_sweep >= 1024 {
            seen.until.retain(|_, until| *until >= now_ms);
            seen.since_sweep = 0;
        }
        if seen.until.len() >= REMEMBERED_MAX {
            tracing::warn!("too many signed control commands within the window; dropping one");
            return Err(ControlRejection::Replayed);
        }
        seen.until.insert(tag, until_ms);
        seen.since_sweep += 1;
        Ok(())
    }

    fn tag(&self, secret: &ClusterSecret, ts: &str, nonce: &str, command: &[u8]) -> [u8; 32] {
        let mut mac = secret.mac();
        self.feed(&mut mac, ts, nonce, command);
        mac.finalize().into_bytes().into()
    }

    fn feed(&self, mac: &mut HmacSha256, ts: &str, nonce: &str, command: &[u8]) {
        for part in [
            self.channel.as_bytes(),
            ts.as_bytes(),
            nonce.as_bytes(),
            command,
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
    }
}

/// A signed envelope, split (not yet checked).
struct Envelope<'a> {
    ts: &'a str,
    nonce: &'a str,
    tag: [u8; 32],
    command: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn parse(payload: &'a [u8]) -> Option<Self> {
        let rest = payload.strip_prefix(&[SIGNED as u8])?;
        let mut parts = rest.splitn(4, |b| *b == b'\n');
        let ts = std::str::from_utf8(parts.next()?).ok()?;
        let nonce = std::str::from_utf8(parts.next()?).ok()?;
        let tag = parts.next()?;
        let command = parts.next()?;
        let valid_ts = !ts.is_empty() && ts.len() <= 20 && ts.bytes().all(|b| b.is_ascii_digit());
        if !valid_ts || nonce.len() != 32 || tag.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(tag.chunks(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self {
            ts,
            nonce,
            tag: bytes,
            command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn auth(secret: &str) -> ControlAuth {
        ControlAuth::new(
            Some(ClusterSecret::new(secret.as_bytes()).unwrap()),
            "chat:control",
        )
    }

    #[test]
    fn a_signed_command_opens_once_on_a_peer_with_the_same_secret() {
        let (a, b) = (auth("0123456789abcdef-one"), auth("0123456789abcdef-one"));
        let sealed = a.seal("Kann\n\nspam", NOW);
        assert!(sealed.starts_with('S'), "{sealed}");
        assert_eq!(b.open(sealed.as_bytes(), NOW + 5), Ok(&b"Kann\n\nspam"[..]));
        assert_eq!(
            b.open(sealed.as_bytes(), NOW + 6),
            Err(ControlRejection::Replayed)
        );
        // The same command again is a new signature (fresh nonce).
        let again = a.seal("Kann\n\nspam", NOW);
        assert_ne!(again, sealed);
        assert!(b.open(again.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn unsigned_badly_signed_altered_and_stale_commands_are_refused() {
        let a = auth("0123456789abcdef-one");
        let other = auth("0123456789abcdef-two");
        assert_eq!(a.open(b"Kann\n\nx", NOW), Err(ControlRejection::Unsigned));
        assert_eq!(a.open(b"Dgw-1", NOW), Err(ControlRejection::Unsigned));
        let forged = other.seal("Dgw-1", NOW);
        assert_eq!(
            a.open(forged.as_bytes(), NOW),
            Err(ControlRejection::BadSignature)
        );
        let sealed = a.seal("Dgw-1", NOW);
        let altered = sealed.replace("Dgw-1", "Dgw-2");
        assert_eq!(
            a.open(altered.as_bytes(), NOW),
            Err(ControlRejection::BadSignature)
        );
        let other_ts = sealed.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert_eq!(
            a.open(other_ts.as_bytes(), NOW),
            Err(ControlRejection::BadSignature)
        );
        for junk in ["S", "S1\n2\n3\nDgw", "Sx\n\n\n"] {
            assert_eq!(
                a.open(junk.as_bytes(), NOW),
                Err(ControlRejection::BadSignature)
            );
        }
        let window = CONTROL_WINDOW.as_millis() as u64;
        let old = a.seal("Dgw-1", NOW - window - 1);
        assert_eq!(a.open(old.as_bytes(), NOW), Err(ControlRejection::Stale));
        let future = a.seal("Dgw-1", NOW + window + 1);
        assert_eq!(a.open(future.as_bytes(), NOW), Err(ControlRejection::Stale));
        let edge = a.seal("Dgw-1", NOW - window);
        assert!(a.open(edge.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn a_command_signed_for_another_channel_is_refused() {
        let secret = ClusterSecret::new(b"0123456789abcdef-one").unwrap();
        let a = ControlAuth::new(Some(secret.clone()), "blue:control");
        let b = ControlAuth::new(Some(secret), "green:control");
        let sealed = a.seal("Dgw-1", NOW);
        assert_eq!(
            b.open(sealed.as_bytes(), NOW),
            Err(ControlRejection::BadSignature)
        );
    }

    #[test]
    fn without_a_secret_commands_go_unsigned_and_envelopes_are_opened() {
        let open = ControlAuth::new(None, "chat:control");
        assert!(!open.is_authenticated());
        assert_eq!(open.seal("Dgw-1", NOW), "Dgw-1");
        assert_eq!(open.open(b"Dgw-1", NOW), Ok(&b"Dgw-1"[..]));
        let sealed = auth("0123456789abcdef-one").seal("Dgw-1", NOW);
        assert_eq!(open.open(sealed.as_bytes(), NOW), Ok(&b"Dgw-1"[..]));
    }

    #[test]
    fn remembered_signatures_are_bounded_and_expire() {
        let a = auth("0123456789abcdef-one");
        for i in 0..3000u64 {
            let sealed = a.seal("Dgw-1", NOW + i);
            assert!(a.open(sealed.as_bytes(), NOW + i).is_ok());
        }
        let later = NOW + 3000 + CONTROL_WINDOW.as_millis() as u64 * 3;
        for i in 0..1100u64 {
            let sealed = a.seal("Dgw-1", later + i);
            assert!(a.open(sealed.as_bytes(), later + i).is_ok());
        }
        assert!(
            a.seen.lock().until.len() < 1200,
            "expired entries are dropped"
        );
    }

    #[test]
    fn secrets_are_long_enough_trimmed_and_never_shown() {
        assert!(ClusterSecret::new(b"short").is_err());
        let dir = std::env::temp_dir().join(format!("chat-secret-{}", std::process::id()));
        std::fs::write(&dir, "0123456789abcdef\n").unwrap();
        let secret = ClusterSecret::from_file(&dir).unwrap();
        assert_eq!(&*secret.0, b"0123456789abcdef");
        assert!(!format!("{secret:?}").contains("0123"));
        std::fs::write(&dir, "tiny\n").unwrap();
        assert!(ClusterSecret::from_file(&dir).is_err());
        std::fs::remove_file(&dir).unwrap();
        assert!(ClusterSecret::from_file(&dir).is_err());
    }
}
