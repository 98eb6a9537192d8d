//! Validation of names, texts and keys, exactly as the contract's comments say.
//!
//! A "character" is a Unicode scalar value; whitespace is Unicode White_Space
//! (what `char::is_whitespace` and `str::trim` use); names must not contain
//! control (Cc) or format (Cf) characters; name lengths count after NFC.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::rules::MAX_CLIENT_MSG_ID_BYTES;

/// A username longer than this (in characters, after NFC) is refused.
pub const MAX_USERNAME_CHARS: usize = 32;
/// A room name longer than this (in characters, after NFC) is refused.
pub const MAX_ROOM_CHARS: usize = 64;

/// Why a username or a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing left (after trimming, for a username).
    #[error("name is empty")]
    Empty,
    /// Longer than the limit of its kind.
    #[error("name is longer than {max} characters")]
    TooLong {
        /// The limit, in characters.
        max: usize,
    },
    /// A control (Cc) or format (Cf) character, by code point.
    #[error("name contains a control or format character (U+{0:04X})")]
    ForbiddenChar(u32),
    /// A room name that starts or ends with whitespace.
    #[error("name has leading or trailing whitespace")]
    SurroundingWhitespace,
    /// Only whitespace and invisible characters.
    #[error("name has no visible character")]
    Invisible,
}

/// A username as accepted: `display` is shown to people, `key` identifies the
/// name (NFC + Unicode lowercase) for uniqueness, idempotency, kick, presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    /// Trimmed and NFC: the name as shown.
    pub display: String,
    /// The identity: `display` lowercased, NFC.
    pub key: String,
}

/// Trims, NFC-normalises and checks a username; returns its display form and key.
pub fn normalize_username(raw: &str) -> Result<Username, NameError> {
    let display: String = raw.trim().nfc().collect();
    check_name_chars(&display, MAX_USERNAME_CHARS)?;
    if !display.chars().any(is_visible) {
        return Err(NameError::Invisible);
    }
    let key: String = display.to_lowercase().nfc().collect();
    Ok(Username { display, key })
}

/// Checks a room name (no trimming: surrounding whitespace is an error) and
/// returns its NFC form, which is the room's identity (case-sensitive).
pub fn normalize_room(raw: &str) -> Result<String, NameError> {
    if raw.starts_with(char::is_whitespace) || raw.ends_with(char::is_whitespace) {
        return Err(NameError::SurroundingWhitespace);
    }
    let room: String = raw.nfc().collect();
    check_name_chars(&room, MAX_ROOM_CHARS)?;
    Ok(room)
}

/// Whether a character shows as something: not White_Space, not
/// Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties, e.g.
/// U+3164 HANGUL FILLER, U+115F, U+FFA0) and not U+2800 BRAILLE PATTERN
/// BLANK. A name of only such characters looks blank.
fn is_visible(c: char) -> bool {
    !(c.is_whitespace() || c == '\u{2800}' || is_default_ignorable(c))
}

/// Default_Ignorable_Code_Point, from Unicode 15.1's DerivedCoreProperties.txt.
fn is_default_ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5
        | 0x180B..=0x180F | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F
        | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

fn check_name_chars(name: &str, max: usize) -> Result<(), NameError> {
    let mut count = 0;
    for c in name.chars() {
        if matches!(
            c.general_category(),
            GeneralCategory::Control | GeneralCategory::Format
        ) {
            return Err(NameError::ForbiddenChar(c as u32));
        }
        count += 1;
    }
    match count {
        0 => Err(NameError::Empty),
        n if n > max => Err(NameError::TooLong { max }),
        _ => Ok(()),
    }
}

/// Why a message text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Nothing but whitespace.
    #[error("message is empty")]
    Empty,
    /// More UTF-8 bytes than the limit.
    #[error("message is {len} bytes, the limit is {max}")]
    TooLarge {
        /// The text's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
}

/// Send's text rules, in the contract's order: empty after trimming, then
/// longer than `max_bytes` UTF-8 bytes as sent. The text itself is kept as sent.
pub fn check_text(text: &str, max_bytes: usize) -> Result<(), TextError> {
    if text.trim().is_empty() {
        return Err(TextError::Empty);
    }
    if text.len() > max_bytes {
        return Err(TextError::TooLarge {
            len: text.len(),
            max: max_bytes,
        });
    }
    Ok(())
}

/// `client_msg_id` may be empty (no dedupe) and at most 64 bytes.
pub fn check_client_msg_id(id: &str) -> bool {
    id.len() <= MAX_CLIENT_MSG_ID_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_show_as_blank_are_refused() {
        for blank in [
            "\u{3164}",
            "\u{115F}\u{1160}",
            "\u{FFA0}",
            "\u{2800}\u{2800}",
            "\u{3164} \u{2800}",
            "\u{034F}",
        ] {
            assert_eq!(
                normalize_username(blank),
                Err(NameError::Invisible),
                "{blank:?}"
            );
        }
        for fine in ["a\u{3164}", "\u{2800}x", "Zoë", "李", "_"] {
            assert!(normalize_username(fine).is_ok(), "{fine:?}");
        }
        // Format characters were refused before, and still are, first.
        assert_eq!(
            normalize_username("\u{200B}"),
            Err(NameError::ForbiddenChar(0x200B))
        );
    }

    #[test]
    fn username_is_trimmed_and_keyed_case_insensitively() {
        let u = normalize_username("  Alice \u{3000}").unwrap();
        assert_eq!(u.display, "Alice");
        assert_eq!(u.key, "alice");
        assert_eq!(normalize_username("ALICE").unwrap().key, u.key);
    }

    #[test]
    fn username_nfc_makes_composed_and_decomposed_equal() {
        let composed = normalize_username("Jos\u{e9}").unwrap();
        let decomposed = normalize_username("Jose\u{301}").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(composed.display.chars().count(), 4);
    }

    #[test]
    fn username_length_counts_characters_after_nfc() {
        assert!(normalize_username(&"a".repeat(32)).is_ok());
        assert_eq!(
            normalize_username(&"a".repeat(33)),
            Err(NameError::TooLong { max: 32 })
        );
        // 32 "é" written decomposed are 64 scalars but 32 after NFC.
        assert!(normalize_username(&"e\u{301}".repeat(32)).is_ok());
        // Multi-byte characters count once each.
        assert!(normalize_username(&"ü".repeat(32)).is_ok());
        assert!(normalize_username(&"😀".repeat(32)).is_ok());
    }

    #[test]
    fn username_rejects_empty_and_forbidden() {
        assert_eq!(normalize_username(""), Err(NameError::Empty));
        assert_eq!(normalize_username(" \t\n "), Err(NameError::Empty));
        for bad in [
            "a\u{0}b",
            "a\u{7}",
            "ab\u{202E}",
            "a\u{200B}b",
            "a\u{200D}b",
            "x\u{7f}",
        ] {
            assert!(
                matches!(normalize_username(bad), Err(NameError::ForbiddenChar(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn room_rules() {
        assert_eq!(normalize_room("Lobby").unwrap(), "Lobby");
        assert_ne!(
            normalize_room("Lobby").unwrap(),
            normalize_room("lobby").unwrap()
        );
        assert!(normalize_room("two words").is_ok());
        assert_eq!(
            normalize_room(" lobby"),
            Err(NameError::SurroundingWhitespace)
        );
        assert_eq!(
            normalize_room("lobby\u{a0}"),
            Err(NameError::SurroundingWhitespace)
        );
        assert_eq!(normalize_room(""), Err(NameError::Empty));
        assert!(normalize_room(&"r".repeat(64)).is_ok());
        assert_eq!(
            normalize_room(&"r".repeat(65)),
            Err(NameError::TooLong { max: 64 })
        );
        assert!(matches!(
            normalize_room("a\u{200B}"),
            Err(NameError::ForbiddenChar(0x200B))
        ));
        assert_eq!(normalize_room("Cafe\u{301}").unwrap(), "Caf\u{e9}");
    }

    #[test]
    fn text_rules_in_order() {
        assert_eq!(check_text("", 10), Err(TextError::Empty));
        assert_eq!(check_text(" \u{3000}\n", 10), Err(TextError::Empty));
        // Empty wins over too large.
        assert_eq!(check_text(&" ".repeat(100), 10), Err(TextError::Empty));
        assert_eq!(
            check_text(&"x".repeat(11), 10),
            Err(TextError::TooLarge { len: 11, max: 10 })
        );
        assert!(check_text(&"x".repeat(10), 10).is_ok());
        // Bytes, not characters: "é" is two bytes.
        assert_eq!(
            check_text(&"é".repeat(6), 11),
            Err(TextError::TooLarge { len: 12, max: 11 })
        );
        // Surrounding whitespace counts toward the size (stored as sent).
        assert!(check_text(" hi ", 4).is_ok());
        assert!(check_text(" hi  ", 4).is_err());
    }

    #[test]
    fn client_msg_id_limit_is_bytes() {
        assert!(check_client_msg_id(""));
        assert!(check_client_msg_id(&"k".repeat(64)));
        assert!(!check_client_msg_id(&"k".repeat(65)));
        assert!(!check_client_msg_id(&"é".repeat(33)));
    }
}
