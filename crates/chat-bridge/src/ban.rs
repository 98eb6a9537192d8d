//! Bans: an identity that may not use the chat until a time (or until an
//! operator lifts it). The identity is what sessions are keyed by: today the
//! normalised name (`Member::key`); with signed identities, the token's
//! subject. A ban is recorded cluster-wide and read at every Hello.

use serde::{Deserialize, Serialize};

/// One ban, as recorded and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// The banned identity's key.
    pub key: String,
    /// Why: shown to the banned user (in the KICKED error) and to operators.
    pub reason: String,
    /// Who banned it, when the operator said (empty when unknown).
    #[serde(default)]
    pub by: String,
    /// When the ban was recorded (ms since the epoch).
    pub created_at_ms: u64,
    /// When it ends (ms since the epoch); `None`: until lifted.
    pub until_ms: Option<u64>,
}

impl Ban {
    /// Whether the ban still holds at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }

    /// What the banned user is told: the reason, or a plain default.
    pub fn message(&self) -> String {
        if self.reason.is_empty() {
            "banned by an operator".to_owned()
        } else {
            self.reason.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_holds_until_its_end_and_a_permanent_one_always() {
        let ban = Ban {
            key: "ann".into(),
            reason: String::new(),
            by: String::new(),
            created_at_ms: 10,
            until_ms: Some(20),
        };
        assert!(ban.is_active(19));
        assert!(!ban.is_active(20));
        assert!(Ban {
            until_ms: None,
            ..ban.clone()
        }
        .is_active(u64::MAX));
        assert_eq!(ban.message(), "banned by an operator");
        let json = serde_json::to_string(&ban).unwrap();
        assert_eq!(serde_json::from_str::<Ban>(&json).unwrap(), ban);
    }
}
