//! The formats that the Lua scripts and this crate share, each with one
//! owner: the value of a presence entry or name claim ("member tag" then the
//! display name), read back as a [`Holder`]. The pub/sub payloads are
//! `wire.rs`'s. Golden vectors (`golden`) pin both, and the tests run them
//! through the real scripts in a real Redis as well as through this code.

use crate::TokenHash;

/// "instance\tsession\t": the prefix of every value a session writes.
pub(super) fn tag_of(instance: &str, session: &str) -> String {
    format!("{}{session}\t", instance_tag(instance))
}

/// "instance\t": the prefix of every value an instance's sessions write
/// (how the REAP_ROOM and TAKE_IF_PREFIX scripts find a dead one's).
pub(super) fn instance_tag(instance: &str) -> String {
    format!("{instance}\t")
}

/// A presence entry's value: the session's tag and its display name.
pub(super) fn entry_value(tag: &str, display: &str) -> String {
    format!("{tag}{display}")
}

/// A name claim's value: the session's tag, its display name, and the hash
/// of the token that may take the name over.
pub(super) fn claim_value(tag: &str, display: &str, resume: &TokenHash) -> String {
    format!("{tag}{display}\t{}", resume.as_str())
}

/// A presence or name-claim value, read back:
/// "instance\tsession\tdisplay name[\tresume hash]" (claims carry the hash;
/// claims written by older gateways may lack the display name too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder<'a> {
    pub(super) instance: &'a str,
    pub(super) session: &'a str,
    pub(super) display: &'a str,
    pub(super) resume: Option<&'a str>,
}

impl<'a> Holder<'a> {
    pub(super) fn parse(value: &'a str) -> Option<Self> {
        let mut parts = value.splitn(4, '\t');
        let instance = parts.next().filter(|g| !g.is_empty())?;
        let session = parts.next()?;
        Some(Self {
            instance,
            session,
            display: parts.next().unwrap_or_default(),
            resume: parts.next(),
        })
    }
}

/// Golden vectors of the entry formats, checked against this module and, in
/// `golden_tests.rs`, against what the Lua scripts write and read.
#[cfg(test)]
pub(super) mod golden {
    /// (instance, session, display name, the presence entry's value).
    pub(crate) const ENTRY: (&str, &str, &str, &str) = (
        "gw-1~00ab",
        "gw-1~00ab-7",
        "Ana L\u{fa}cia",
        "gw-1~00ab\tgw-1~00ab-7\tAna L\u{fa}cia",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_golden_entry_is_written_and_read_here() {
        let (instance, session, display, value) = golden::ENTRY;
        assert_eq!(entry_value(&tag_of(instance, session), display), value);
        assert!(value.starts_with(&instance_tag(instance)));
        assert_eq!(
            Holder::parse(value),
            Some(Holder {
                instance,
                session,
                display,
                resume: None
            })
        );
        let hash = TokenHash::of("a token");
        let claim = claim_value(&tag_of(instance, session), display, &hash);
        assert_eq!(claim, format!("{value}\t{}", hash.as_str()));
        assert_eq!(
            Holder::parse(&claim).and_then(|h| h.resume),
            Some(hash.as_str())
        );
        assert_eq!(Holder::parse("\tsession\tname"), None, "no instance");
    }
}
