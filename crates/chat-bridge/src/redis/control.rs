//! Payloads on the control channel (`{prefix}:control`), which every
//! gateway's subscriber connection listens to. Text, one command per message:
//!
//! - `K<name key>\n<room>\n<reason>`: kick the sessions holding the name,
//!   out of `<room>` only when it is not empty. The reason is last, so it may
//!   contain newlines; names and rooms cannot (control characters are refused).
//! - `D<gateway id>[\n<request id>]`: that gateway drains (ids contain no
//!   whitespace); with a request id, it answers with `d`.
//! - `d<request id>\n<count>`: a drained gateway's answer: it told `count`
//!   connections to reconnect. Only the asking gateway waits for it.
//! - `R<name key>\n<session id>`: a newer session took the name over with a
//!   resume token; whichever gateway holds `session id` closes it (4002).
//!
//! An unknown tag is logged and ignored, so commands can be added without
//! breaking gateways of an older version.

use crate::ControlCommand;

/// A command as published: kicks go to every gateway, a drain names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Control {
    Kick {
        key: String,
        room: Option<String>,
        reason: String,
    },
    Drain {
        gateway_id: String,
        reply_to: Option<String>,
    },
    Drained {
        reply_to: String,
        told: u32,
    },
    Replace {
        key: String,
        session_id: String,
    },
}

impl Control {
    pub(super) fn encode(&self) -> String {
        match self {
            Self::Kick { key, room, reason } => {
                format!("K{key}\n{}\n{reason}", room.as_deref().unwrap_or_default())
            }
            Self::Drain {
                gateway_id,
                reply_to: None,
            } => format!("D{gateway_id}"),
            Self::Drain {
                gateway_id,
                reply_to: Some(reply_to),
            } => format!("D{gateway_id}\n{reply_to}"),
            Self::Drained { reply_to, told } => format!("d{reply_to}\n{told}"),
            Self::Replace { key, session_id } => format!("R{key}\n{session_id}"),
        }
    }

    pub(super) fn decode(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut chars = text.chars();
        let tag = chars.next()?;
        let rest = chars.as_str();
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        match tag {
            'K' => {
                let mut parts = rest.splitn(3, '\n');
                let key = parts.next().filter(|k| !k.is_empty())?.to_owned();
                let room = parts.next()?;
                let reason = parts.next()?.to_owned();
                let room = (!room.is_empty()).then(|| room.to_owned());
                Some(Self::Kick { key, room, reason })
            }
            'D' => {
                let (gateway_id, reply_to) = match rest.split_once('\n') {
                    Some((gateway_id, reply_to)) => (gateway_id, Some(non_empty(reply_to)?)),
                    None => (rest, None),
                };
                Some(Self::Drain {
                    gateway_id: non_empty(gateway_id)?,
                    reply_to,
                })
            }
            'd' => {
                let (reply_to, told) = rest.split_once('\n')?;
                Some(Self::Drained {
                    reply_to: non_empty(reply_to)?,
                    told: told.parse().ok()?,
                })
            }
            'R' => {
                let (key, session_id) = rest.split_once('\n')?;
                Some(Self::Replace {
                    key: non_empty(key)?,
                    session_id: non_empty(session_id)?,
                })
            }
            _ => None,
        }
    }

    /// What gateway `me` (this process: `instance`) must do, if anything.
    /// (A `Drained` answer is for the bridge that asked, not for the
    /// gateway; a `Replace` only for the instance of the replaced session,
    /// so that a reconnect storm does not reach every gateway's control task.)
    pub(super) fn for_gateway(self, me: &str, instance: &str) -> Option<ControlCommand> {
        match self {
            Self::Kick { key, room, reason } => Some(ControlCommand::Kick { key, room, reason }),
            Self::Drain {
                gateway_id,
                reply_to,
            } => (gateway_id == me).then_some(ControlCommand::Drain { reply_to }),
            Self::Replace { key, session_id } => (crate::parse_session_id(&session_id)
                .is_some_and(|(of, _)| of == instance))
            .then_some(ControlCommand::Replace { key, session_id }),
            Self::Drained { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_round_trips() {
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
                reply_to: None,
            },
            Control::Drain {
                gateway_id: "gw-1".into(),
                reply_to: Some("gw-2~ab/3".into()),
            },
            Control::Drained {
                reply_to: "gw-2~ab/3".into(),
                told: 8,
            },
            Control::Replace {
                key: "ann".into(),
                session_id: "gw-1~ab-7".into(),
            },
        ] {
            assert_eq!(Control::decode(control.encode().as_bytes()), Some(control));
        }
    }

    #[test]
    fn malformed_and_unknown_payloads_are_refused() {
        for bad in [
            "",
            "X",
            "K",
            "Kann",
            "Kann\nroom",
            "D",
            "Dgw\n",
            "d",
            "dreq",
            "dreq\nmany",
            "R",
            "Rann",
            "Rann\n",
            "\u{1F600}",
        ] {
            assert_eq!(Control::decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(Control::decode(b"\xff"), None);
    }

    #[test]
    fn a_drain_is_for_the_named_gateway_only() {
        let drain = Control::Drain {
            gateway_id: "gw-1".into(),
            reply_to: Some("r".into()),
        };
        assert_eq!(
            drain.clone().for_gateway("gw-1", "gw-1~a"),
            Some(ControlCommand::Drain {
                reply_to: Some("r".into())
            })
        );
        assert_eq!(drain.for_gateway("gw-2", "gw-2~a"), None);
        let kick = Control::Kick {
            key: "a".into(),
            room: None,
            reason: "r".into(),
        };
        assert!(kick.for_gateway("any", "any~a").is_some());
        let answer = Control::Drained {
            reply_to: "r".into(),
            told: 1,
        };
        assert_eq!(
            answer.for_gateway("gw-1", "gw-1~a"),
            None,
            "answers are for the bridge"
        );
    }

    #[test]
    fn a_takeover_is_for_the_instance_of_the_replaced_session_only() {
        let replace = Control::Replace {
            key: "ann".into(),
            session_id: crate::session_id("gw-1~aa", 7),
        };
        assert_eq!(
            replace.clone().for_gateway("gw-1", "gw-1~aa"),
            Some(ControlCommand::Replace {
                key: "ann".into(),
                session_id: "gw-1~aa-7".into()
            })
        );
        assert_eq!(
            replace.clone().for_gateway("gw-1", "gw-1~bb"),
            None,
            "a restarted gw-1"
        );
        assert_eq!(replace.for_gateway("gw-2", "gw-2~aa"), None);
    }
}
