//! Typed, prefixed resource IDs: `<prefix>_` then 20 lowercase Crockford base32 characters, the
//! first 10 encoding the creation millisecond (so IDs sort by creation time), the last 10 random.

use std::fmt;

use serde::{Deserialize, Serialize};

const BODY_LEN: usize = 20;

/// The kinds of resource that carry an ID, with their documented prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Organization,
    ApiKey,
    Engagement,
    Target,
    Finding,
    Task,
    WikiPage,
    Report,
    Event,
    Webhook,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Organization => "org",
            Self::ApiKey => "key",
            Self::Engagement => "eng",
            Self::Target => "tgt",
            Self::Finding => "fnd",
            Self::Task => "tsk",
            Self::WikiPage => "wik",
            Self::Report => "rpt",
            Self::Event => "evt",
            Self::Webhook => "whk",
        }
    }
}

/// A validated ID of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    /// A new ID for `kind`, created now.
    pub fn generate(kind: IdKind) -> Self {
        Self::generate_at(kind, chrono::Utc::now().timestamp_millis())
    }

    /// A new ID whose time part is `millis` (the event log stamps event IDs with the commit time).
    pub fn generate_at(kind: IdKind, millis: i64) -> Self {
        // A ULID is 10 time characters then 16 random ones, in upper-case Crockford base32;
        // keeping 10 of the random characters gives the documented 20-character body.
        let ulid = ulid::Ulid::from_parts(u64::try_from(millis).unwrap_or(0), rand::random());
        let text = ulid.to_string().to_ascii_lowercase();
        Self(format!("{}_{}", kind.prefix(), &text[..BODY_LEN]))
    }

    /// Parses `text` as an ID of `kind`; `None` when it is not one (wrong prefix, length or alphabet).
    pub fn parse(kind: IdKind, text: &str) -> Option<Self> {
        let body = text.strip_prefix(kind.prefix())?.strip_prefix('_')?;
        let valid = body.len() == BODY_LEN
            && body
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'h' | b'j' | b'k' | b'm' | b'n' | b'p'..=b't' | b'v'..=b'z'));
        valid.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_documented_shape() {
        let id = Id::generate(IdKind::Engagement);
        assert!(id.as_str().starts_with("eng_"));
        assert_eq!(id.as_str().len(), 4 + BODY_LEN);
        assert_eq!(Id::parse(IdKind::Engagement, id.as_str()), Some(id.clone()));
        assert_eq!(Id::parse(IdKind::Finding, id.as_str()), None);
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let earlier = Id::generate_at(IdKind::Engagement, 1_700_000_000_000);
        let later = Id::generate_at(IdKind::Engagement, 1_700_000_000_001);
        assert!(earlier < later);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "eng_",
            "eng_01j9k2m3n4p5q6r7s8t",
            "eng_01j9k2m3n4p5q6r7s8t9x",
            "eng_01J9K2M3N4P5Q6R7S8T9",
            "eng_01j9k2m3n4p5q6r7s8ti",
            "eng-01j9k2m3n4p5q6r7s8t9",
            "org_01j9k2m3n4p5q6r7s8t9",
        ] {
            assert_eq!(Id::parse(IdKind::Engagement, bad), None, "{bad}");
        }
        assert!(Id::parse(IdKind::Engagement, "eng_01j9k2m3n4p5q6r7s8t9").is_some());
    }
}
