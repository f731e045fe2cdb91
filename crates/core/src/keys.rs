//! Kafka message keys, per DESIGN.md's topic table. Keys decide partitioning
//! and compaction, so their format is part of the contract.

/// Key of a prerequisite link: `{prerequisite_id}>{concept_id}`.
pub fn prerequisite_key(prerequisite_id: &str, concept_id: &str) -> String {
    format!("{prerequisite_id}>{concept_id}")
}

/// Key of a mastery record: `{user_id}/{concept_id}`.
pub fn mastery_key(user_id: &str, concept_id: &str) -> String {
    format!("{user_id}/{concept_id}")
}

/// Splits a prerequisite key; `None` when it is not of the form `a>b`.
pub fn parse_prerequisite_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('>')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
}

/// Splits a mastery key; `None` when it is not of the form `u/c`.
pub fn parse_mastery_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        assert_eq!(
            parse_prerequisite_key(&prerequisite_key("a", "b")),
            Some(("a", "b"))
        );
        assert_eq!(
            parse_mastery_key(&mastery_key("u1", "c9")),
            Some(("u1", "c9"))
        );
        assert_eq!(parse_mastery_key("nokey"), None);
        assert_eq!(parse_prerequisite_key(">b"), None);
    }
}
