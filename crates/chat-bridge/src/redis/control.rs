//! Payloads on the control channel (`{prefix}:control`), which every
//! gateway's subscriber connection listens to. Text, one command per message:
//!
//! - `K<name key>\n<room>\n<reason>`: kick the sessions holding the name,
//!   out of `<room>` only when it is not empty. The reason is last, so it may
//!   contain newlines; names and rooms cannot (control characters are refused).
//! - `D<gateway id>`: that gateway drains (ids contain no whitespace).
//!
//! An unknown tag is logged and ignored, so commands can be added without
//! breaking gateways of an older version.

use crate::ControlCommand;

/// A command as published: kicks go to every gateway, a drain names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Kick {
        key: String,
        room: Option<String>,
        reason: String,
    },
    Drain {
        gateway_id: String,
    },
}

impl Control {
    pub fn encode(&self) -> String {
        match self {
            Self::Kick { key, room, reason } => {
                format!("K{key}\n{}\n{reason}", room.as_deref().unwrap_or_default())
            }
            Self::Drain { gateway_id } => format!("D{gateway_id}"),
        }
    }

    pub fn decode(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut chars = text.chars();
        let tag = chars.next()?;
        let rest = chars.as_str();
        match tag {
            'K' => {
                let mut parts = rest.splitn(3, '\n');
                let key = parts.next().filter(|k| !k.is_empty())?.to_owned();
                let room = parts.next()?;
                let reason = parts.next()?.to_owned();
                let room = (!room.is_empty()).then(|| room.to_owned());
                Some(Self::Kick { key, room, reason })
            }
            'D' if !rest.is_empty() => Some(Self::Drain {
                gateway_id: rest.to_owned(),
            }),
            _ => None,
        }
    }

    /// What gateway `me` must do, if anything.
    pub fn for_gateway(self, me: &str) -> Option<ControlCommand> {
        match self {
            Self::Kick { key, room, reason } => Some(ControlCommand::Kick { key, room, reason }),
            Self::Drain { gateway_id } => (gateway_id == me).then_some(ControlCommand::Drain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_round_trips_with_and_without_room() {
        for control in [
            Control::Kick {
                key: "ann".into(),
                room: Some("lobby".into()),
                reason: "spam\nand more".into(),
            },
            Control::Kick {
                key: "ann".into(),
                room: None,
                reason: String::new(),
            },
            Control::Drain {
                gateway_id: "gw-1".into(),
            },
        ] {
            assert_eq!(Control::decode(control.encode().as_bytes()), Some(control));
        }
    }

    #[test]
    fn malformed_and_unknown_payloads_are_refused() {
        for bad in ["", "X", "K", "Kann", "Kann\nroom", "D", "\u{1F600}"] {
            assert_eq!(Control::decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(Control::decode(b"\xff"), None);
    }

    #[test]
    fn a_drain_is_for_the_named_gateway_only() {
        let drain = Control::Drain {
            gateway_id: "gw-1".into(),
        };
        assert_eq!(
            drain.clone().for_gateway("gw-1"),
            Some(ControlCommand::Drain)
        );
        assert_eq!(drain.for_gateway("gw-2"), None);
        let kick = Control::Kick {
            key: "a".into(),
            room: None,
            reason: "r".into(),
        };
        assert!(kick.for_gateway("any").is_some());
    }
}
