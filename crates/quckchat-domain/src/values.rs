//! Validated values: each is built by a `parse` that rejects bad input, so code past
//! the edge only ever holds valid values.

use serde::Serialize;

use crate::error::DomainError;

/// The most characters a message may hold.
pub const MAX_CONTENT_CHARS: usize = 10_000;
/// The most bytes an emoji (reaction) may take.
pub const MAX_EMOJI_BYTES: usize = 64;
/// The most attachments one message may carry.
pub const MAX_ATTACHMENTS: usize = 32;

fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError::InvalidInput(msg.into())
}

/// The text of a message: at most [`MAX_CONTENT_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MessageContent(String);

impl MessageContent {
    /// Accepts content of at most [`MAX_CONTENT_CHARS`] characters. Empty content is allowed
    /// only where `allow_empty` says so (a message with attachments needs no text).
    pub fn parse(s: String, allow_empty: bool) -> Result<Self, DomainError> {
        let chars = s.chars().count();
        if chars > MAX_CONTENT_CHARS {
            return Err(invalid(format!("content is longer than {MAX_CONTENT_CHARS} characters")));
        }
        if !allow_empty && s.trim().is_empty() {
            return Err(invalid("content must not be empty"));
        }
        Ok(Self(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A reaction: a non-empty string of at most [`MAX_EMOJI_BYTES`] bytes without
/// whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Emoji(String);

impl Emoji {
    /// Validates a reaction.
    pub fn parse(s: String) -> Result<Self, DomainError> {
        if s.is_empty() || s.len() > MAX_EMOJI_BYTES {
            return Err(invalid(format!("emoji must be 1 to {MAX_EMOJI_BYTES} bytes")));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace() && c != '\u{200d}') {
            return Err(invalid("emoji must not contain whitespace or control characters"));
        }
        Ok(Self(s))
    }

    /// The reaction text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A login name: 3 to 32 characters of letters, digits, `_`, `.` or `-`; kept as given,
/// compared case-insensitively by the stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// Validates a username.
    pub fn parse(s: String) -> Result<Self, DomainError> {
        let s = s.trim().to_string();
        let n = s.chars().count();
        if !(3..=32).contains(&n) {
            return Err(invalid("username must be 3 to 32 characters"));
        }
        // ASCII only, as the QuckChat app accepts (`^[a-zA-Z0-9_]+$`): look-alikes such as
        // a Cyrillic `а` in `аlice` or full-width `ａｌｉｃｅ` cannot pose as `alice`.
        // Display names stay Unicode; accounts made before this rule keep their names.
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid("username may hold only ASCII letters, digits and '_'"));
        }
        Ok(Self(s))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name or group name: 1 to 100 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// Validates a display name.
    pub fn parse(s: String) -> Result<Self, DomainError> {
        let s = s.trim().to_string();
        let n = s.chars().count();
        if !(1..=100).contains(&n) {
            return Err(invalid("name must be 1 to 100 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid("name must not contain control characters"));
        }
        Ok(Self(s))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text of bounded length (a bio, an avatar URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BoundedText(String);

impl BoundedText {
    /// Accepts at most `max` characters.
    pub fn parse(s: String, max: usize, what: &str) -> Result<Self, DomainError> {
        if s.chars().count() > max {
            return Err(invalid(format!("{what} must be at most {max} characters")));
        }
        Ok(Self(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_limits_are_in_characters() {
        assert!(MessageContent::parse("é".repeat(MAX_CONTENT_CHARS), false).is_ok());
        assert!(MessageContent::parse("é".repeat(MAX_CONTENT_CHARS + 1), false).is_err());
        assert!(MessageContent::parse("  ".into(), false).is_err());
        assert!(MessageContent::parse(String::new(), true).is_ok());
    }

    #[test]
    fn emoji_is_bounded_and_single_token() {
        assert!(Emoji::parse("👍".into()).is_ok());
        assert!(Emoji::parse("👩‍👩‍👧".into()).is_ok());
        assert!(Emoji::parse(String::new()).is_err());
        assert!(Emoji::parse("a b".into()).is_err());
        assert!(Emoji::parse("x".repeat(65)).is_err());
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("alice_1".into()).is_ok());
        assert!(Username::parse("al".into()).is_err());
        assert!(Username::parse("al ice".into()).is_err());
        // Look-alikes of `alice` (Cyrillic а, full-width letters) and punctuation are refused.
        assert!(Username::parse("\u{430}lice".into()).is_err());
        assert!(Username::parse("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}".into()).is_err());
        assert!(Username::parse("al.ice".into()).is_err());
        assert!(Username::parse("al-ice".into()).is_err());
        assert!(Username::parse("A".repeat(32)).is_ok());
        assert!(Username::parse("A".repeat(33)).is_err());
    }
}
