//! The per-organization SHA-256 hash chain over the stored bytes of each event.

use sha2::{Digest, Sha256};

/// The `prev_hash` of an organization's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the chain covers: every stored field of an `event_log` row except the hashes.
#[derive(Debug, Clone, Copy)]
pub struct ChainedFields<'a> {
    pub position: i64,
    pub event_id: &'a str,
    pub organization_id: &'a str,
    pub engagement_id: Option<&'a str>,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a str,
    pub metadata: &'a str,
    pub recorded_at: i64,
}

/// `SHA-256(prev_hash ‖ fields)`, each field length-prefixed so no two rows encode alike.
pub fn chain_hash(prev_hash: &str, fields: &ChainedFields<'_>) -> String {
    let mut hasher = Sha256::new();
    let mut put = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    put(prev_hash.as_bytes());
    put(&fields.position.to_le_bytes());
    put(fields.event_id.as_bytes());
    put(fields.organization_id.as_bytes());
    match fields.engagement_id {
        Some(id) => put(id.as_bytes()),
        // Distinct from `Some("")`.
        None => put(&[0xff]),
    }
    put(fields.aggregate_type.as_bytes());
    put(fields.aggregate_id.as_bytes());
    put(&fields.sequence.to_le_bytes());
    put(fields.event_type.as_bytes());
    put(fields.event_version.as_bytes());
    put(fields.payload.as_bytes());
    put(fields.metadata.as_bytes());
    put(&fields.recorded_at.to_le_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(payload: &'a str) -> ChainedFields<'a> {
        ChainedFields {
            position: 1,
            event_id: "evt_01j9k2m3n4p5q6r7s8t9",
            organization_id: "org_01j9k2m3n4p5q6r7s8t9",
            engagement_id: None,
            aggregate_type: "engagement",
            aggregate_id: "eng_01j9k2m3n4p5q6r7s8t9",
            sequence: 1,
            event_type: "engagement.created",
            event_version: "1",
            payload,
            metadata: "{}",
            recorded_at: 1_700_000_000_000,
        }
    }

    #[test]
    fn any_changed_byte_changes_the_hash() {
        let a = chain_hash(GENESIS, &fields(r#"{"name":"a"}"#));
        let b = chain_hash(GENESIS, &fields(r#"{"name":"b"}"#));
        assert_ne!(a, b);
        assert_eq!(a, chain_hash(GENESIS, &fields(r#"{"name":"a"}"#)));
        assert_ne!(a, chain_hash(&b, &fields(r#"{"name":"a"}"#)));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn a_missing_engagement_differs_from_an_empty_one() {
        let none = chain_hash(GENESIS, &fields("{}"));
        let empty = chain_hash(GENESIS, &ChainedFields { engagement_id: Some(""), ..fields("{}") });
        assert_ne!(none, empty);
    }
}
